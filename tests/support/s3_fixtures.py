"""pytest fixtures for the S3 blob store: one moto server per session, a fresh bucket per test.

Load with `pytest_plugins = ["tests.support.s3_fixtures"]` in tests/conftest.py (or `-p tests.support.s3_fixtures`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# Dummy credentials: moto accepts any, and setting them explicitly keeps the developer's real AWS
# configuration (env, ~/.aws) out of the tests.
TEST_CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test"}
TEST_REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a running moto S3 server (a separate process on 127.0.0.1)."""
    from tests.support.s3_server import MotoS3Server

    server = MotoS3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server: str) -> Any:
    """Settings for a bucket name no other test uses; the bucket itself is not created."""
    from fluxserve.core.settings import S3Settings

    bucket = f"test-{uuid.uuid4().hex[:20]}"
    return S3Settings(bucket=bucket, endpoint_url=s3_server, region=TEST_REGION, **TEST_CREDENTIALS)


@pytest.fixture
def s3_blobs(s3_settings: Any) -> Iterator[Any]:
    """An S3BlobStore on a fresh, empty bucket of the moto server."""
    from fluxserve.blobs.s3 import S3BlobStore

    store = S3BlobStore.open(s3_settings, create_bucket=True)
    try:
        yield store
    finally:
        store.close()
