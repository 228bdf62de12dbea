"""Images in an S3-compatible bucket (moto's S3 server over real HTTP): served, fed back into Redux unfetched."""

from __future__ import annotations

import dataclasses
import io

import httpx
from PIL import Image

from fluxserve.core.settings import S3Settings, UrlPolicy
from tests.conftest import make_settings, start_live_server
from tests.support.s3_fixtures import TEST_REGION


def test_outputs_live_in_the_bucket_and_feed_redux(tmp_path, tiny_engine, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    from fluxserve.blobs.s3 import S3BlobStore

    S3BlobStore.open(S3Settings(bucket="images", endpoint_url=s3_server, region=TEST_REGION), create_bucket=True)
    settings = make_settings(tmp_path, redux_enabled=True)
    bucket = S3Settings(bucket="images", prefix="outputs/", endpoint_url=s3_server, region=TEST_REGION)
    storage = dataclasses.replace(settings.storage, s3=bucket)
    # Loopback (where moto listens) is NOT allowed for fetched URLs: Redux must read its input from storage.
    settings = dataclasses.replace(settings, storage=storage, urls=UrlPolicy())
    server = start_live_server(settings, tiny_engine)
    base = server.url
    try:
        with server.client() as http:
            text = http.post("/fal-ai/flux/schnell", json={"prompt": "a cat", "image_size": "square",
                                                           "output_format": "png"}).json()  # fmt: skip
            url = text["images"][0]["url"]
            redux = http.post("/fal-ai/flux/schnell/redux", json={"image_url": url, "image_size": "square"})
            fetched = httpx.get(url, follow_redirects=True)
    finally:
        server.stop()
    assert url.startswith(f"{base}/files/"), url  # redirects to the bucket: a presigned URL would expire
    assert str(fetched.url).startswith(f"{s3_server}/images/outputs/") and "Signature" in str(fetched.url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (512, 512)
    assert redux.status_code == 200, redux.text
    assert list((tmp_path / "files").glob("*")) == [], "nothing written to local disk"
