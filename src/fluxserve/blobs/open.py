"""The one place a blob backend is chosen: files under the data dir, or an S3-compatible bucket."""

from __future__ import annotations

from fluxserve.blobs.base import BlobStore
from fluxserve.core.settings import StorageSettings


def open_blobs(storage: StorageSettings) -> BlobStore:
    if storage.s3_url is None:
        from fluxserve.blobs.local import LocalBlobStore

        return LocalBlobStore.open(storage.root)
    from fluxserve.blobs.s3 import S3BlobStore, S3Settings, parse_s3_url

    bucket, prefix = parse_s3_url(storage.s3_url)
    s3 = S3Settings(
        bucket=bucket, prefix=prefix, endpoint_url=storage.s3_endpoint, region=storage.s3_region,
        public_base_url=storage.s3_public_url, presign_seconds=storage.s3_presign_seconds,
    )  # fmt: skip
    return S3BlobStore.open(s3)
