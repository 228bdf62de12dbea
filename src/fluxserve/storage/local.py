"""Local-disk blobs, served back by the API's /files route."""

from __future__ import annotations

import mimetypes
import re
import uuid
from pathlib import Path

from fluxserve.errors import NotFound

# Keys are generated here (uuid + extension); anything else is refused so a key can never escape the root.
KEY_PATTERN = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{1,8}$")
FILES_ROUTE = "/files/"


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> LocalBlobStore:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        key = f"{uuid.uuid4().hex}.{extension}"
        self.put_at(key, data)
        return key

    def put_at(self, key: str, data: bytes) -> None:
        """Store under a key handed out earlier (an upload URL)."""
        if not KEY_PATTERN.fullmatch(key):
            raise NotFound(key)
        tmp = self.root / f".{key}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / key)  # atomic: a reader never sees half a file

    def url(self, key: str, base_url: str) -> str:
        return base_url.rstrip("/") + FILES_ROUTE + key

    def key_for_url(self, url: str) -> str | None:
        """Local URLs carry whichever host the client used; the image fetcher matches them by origin."""
        return None

    def delete(self, key: str) -> None:
        if KEY_PATTERN.fullmatch(key):
            (self.root / key).unlink(missing_ok=True)

    def read(self, key: str) -> tuple[bytes, str]:
        if not KEY_PATTERN.fullmatch(key):
            raise NotFound(key)
        path = self.root / key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(key) from None
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return data, content_type
