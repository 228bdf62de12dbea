"""Local-disk blobs, served back by the API's /files route."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fluxserve.blobs.base import FILES_ROUTE, KEY_PATTERN, RECORDS_DIR, check_record_name, new_blob_key
from fluxserve.blobs.content_types import served_type
from fluxserve.core.errors import NotFound


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path) -> LocalBlobStore:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        key = new_blob_key(extension)
        self.put_at(key, data)
        return key

    def _temp(self, name: str, data: bytes) -> Path:
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        return tmp

    def put_at(self, key: str, data: bytes) -> None:
        if not KEY_PATTERN.fullmatch(key):
            raise NotFound(key)
        self._temp(key, data).replace(self.root / key)  # atomic: a reader never sees half a file

    def put_new(self, key: str, data: bytes) -> bool:
        if not KEY_PATTERN.fullmatch(key):
            raise NotFound(key)
        tmp = self._temp(key, data)
        try:
            os.link(tmp, self.root / key)  # atomic and exclusive: fails if the key already holds a file
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def url(self, key: str, base_url: str) -> str:
        return base_url.rstrip("/") + FILES_ROUTE + key

    def redirect_url(self, key: str) -> str | None:
        if not KEY_PATTERN.fullmatch(key) or not (self.root / key).is_file():
            raise NotFound(key)
        return None  # the API serves local files itself

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
        return data, served_type(data)[0]

    # -- records
    def _record_path(self, name: str) -> Path:
        return self.root / RECORDS_DIR / check_record_name(name)

    def put_record(self, name: str, data: bytes) -> None:
        path = self._record_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def read_record(self, name: str) -> bytes | None:
        try:
            return self._record_path(name).read_bytes()
        except FileNotFoundError:
            return None

    def list_records(self, prefix: str) -> list[tuple[str, float]]:
        base = self.root / RECORDS_DIR
        start = base / prefix.rpartition("/")[0]  # only the folder the prefix names, not every record
        found = []
        for path in start.rglob("*") if start.is_dir() else ():
            name = path.relative_to(base).as_posix()
            if name.startswith(prefix) and not path.name.startswith(".") and path.is_file():
                try:
                    found.append((name, path.stat().st_mtime))
                except FileNotFoundError:  # removed by a concurrent sweep
                    continue
        return found

    def delete_record(self, name: str) -> None:
        self._record_path(name).unlink(missing_ok=True)
