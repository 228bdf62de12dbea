"""The BlobStore interface: bytes in, a key out; the key becomes a URL the client can fetch."""

from __future__ import annotations

from typing import Protocol


class BlobStore(Protocol):
    def put(self, data: bytes, content_type: str, extension: str) -> str:
        """Store bytes; return the key they are stored under."""

    def put_at(self, key: str, data: bytes) -> None:
        """Store bytes under a key this store handed out earlier (uploads)."""

    def url(self, key: str, base_url: str) -> str:
        """An absolute URL for a key, given the base URL the client reached the API on."""

    def read(self, key: str) -> tuple[bytes, str]:
        """The bytes and content type stored under key; raises NotFound."""

    def key_for_url(self, url: str) -> str | None:
        """The key when url is one of this store's own URLs that does not depend on the API's host."""

    def delete(self, key: str) -> None:
        """Remove a blob; a missing key is not an error (retention sweeps may race)."""
