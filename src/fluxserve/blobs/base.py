"""The BlobStore interface: bytes in, a key out; the key becomes a URL the client can fetch.

Besides blobs, a store keeps small named records (uploads.py keeps its upload grants there), so every API node
that shares the blobs also shares who may write which upload, with no second database.
"""

from __future__ import annotations

from typing import Protocol


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
