"""The one place a blob backend is chosen: files under the data dir, or an S3-compatible bucket."""

from __future__ import annotations

from fluxserve.blobs.base import BlobStore
from fluxserve.core.settings import StorageSettings


def open_blobs(storage: StorageSettings) -> BlobStore:
    if storage.s3 is None:
        from fluxserve.blobs.local import LocalBlobStore

        return LocalBlobStore.open(storage.root)
    from fluxserve.blobs.s3 import S3BlobStore

    return S3BlobStore.open(storage.s3)
