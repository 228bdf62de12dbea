"""The BlobStore interface: bytes in, a key out; the key becomes a URL the client can fetch.

Besides blobs, a store keeps small named records (uploads.py keeps its upload grants there), so every API node
that shares the blobs also shares who may write which upload, with no second database.
"""

from __future__ import annotations

import re
import uuid
from typing import Protocol

# The key scheme every backend shares: keys are minted here (uuid + extension); anything else is refused, so a
# key can never escape its root or name a record.
KEY_PATTERN = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{1,8}$")
# Record names: lowercase path segments, none empty or starting with a dot, so a name never leaves its folder.
RECORD_PATTERN = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-][a-z0-9_.-]*)+$")
RECORDS_DIR = ".records"  # a leading dot: never a blob key, so never served
# Where the API serves local blobs; a local blob's URL is base URL + FILES_ROUTE + key.
FILES_ROUTE = "/files/"


def new_blob_key(extension: str) -> str:
    return f"{uuid.uuid4().hex}.{extension}"


def check_record_name(name: str) -> str:
    if not RECORD_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(f"not a record name: {name!r}")
    return name


class BlobStore(Protocol):
    def put(self, data: bytes, content_type: str, extension: str) -> str:
        """Store bytes; return the key they are stored under."""

    def put_at(self, key: str, data: bytes) -> None:
        """Store bytes under a key this store handed out earlier, replacing what is there."""

    def put_new(self, key: str, data: bytes) -> bool:
        """Store bytes under key only if nothing is stored there yet (atomic); False when something is."""

    def url(self, key: str, base_url: str) -> str:
        """An absolute URL for a key, given the base URL the client reached the API on."""

    def read(self, key: str) -> tuple[bytes, str]:
        """The bytes and content type stored under key; raises NotFound."""

    def redirect_url(self, key: str) -> str | None:
        """Where GET /files/<key> sends the client instead of serving the bytes itself (a fresh presigned
        URL), or None to serve them; raises NotFound when nothing is stored under key."""

    def key_for_url(self, url: str) -> str | None:
        """The key when url is one of this store's own URLs that does not depend on the API's host."""

    def delete(self, key: str) -> None:
        """Remove a blob; a missing key is not an error (retention sweeps may race)."""

    # -- records: small private objects, never served (their names cannot be blob keys)
    def put_record(self, name: str, data: bytes) -> None:
        """Write (or replace) the record called name, e.g. 'uploads/<owner>/<key>.grant'."""

    def read_record(self, name: str) -> bytes | None: ...

    def list_records(self, prefix: str) -> list[tuple[str, float]]:
        """(name, time last written as a Unix timestamp) of every record whose name starts with prefix."""

    def delete_record(self, name: str) -> None:
        """Remove a record; a missing one is not an error."""
