"""Object lifetimes like fal's CDN: outputs outlive their job records, X-Fal-Object-Lifecycle-Preference (and
an upload's X-Fal-Object-Lifecycle) sets when a file is deleted, and S3 URLs work past any presign lifetime.

Every test runs on both blob backends (local disk and moto's S3 server), where the expiry index lives; the
sweep is upkeep's own, run with a `now` hours ahead instead of waiting.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import fal_client
import httpx
import pytest

from fluxserve.core.settings import S3Settings, UpkeepSettings
from fluxserve.processes.upkeep import Upkeep
from tests.api.test_js_client import node_client
from tests.api.test_served_files import PNG
from tests.conftest import make_settings, start_live_server
from tests.support.s3_fixtures import TEST_CREDENTIALS, TEST_REGION
from tests.support.waits import wait_status

RUN = "/fal-ai/flux/schnell"
INPUT = {"prompt": "a lighthouse at dusk", "image_size": "square"}
HEADER = "x-fal-object-lifecycle-preference"
HOUR = 3600.0
ONE_SECOND = datetime.timedelta(seconds=1)


def lifecycle(seconds) -> dict[str, str]:
    return {HEADER: json.dumps({"expiration_duration_seconds": seconds})}


def on_s3(settings, endpoint_url: str):
    """settings storing files in a fresh bucket, whose redirect targets are presigned for 1 s only."""
    from fluxserve.blobs.s3 import S3BlobStore

    bucket = f"lifetimes-{uuid.uuid4().hex[:12]}"
    s3 = S3Settings(bucket=bucket, endpoint_url=endpoint_url, region=TEST_REGION, presign_seconds=1,
                    **TEST_CREDENTIALS)  # fmt: skip
    S3BlobStore.open(s3, create_bucket=True).close()
    return dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, s3=s3))


@pytest.fixture(params=["local", "s3"])
def server(request, tmp_path, fake_engine):
    """A live server (fake engine) storing its files on one backend."""
    settings = make_settings(tmp_path)
    if request.param == "s3":
        settings = on_s3(settings, request.getfixturevalue("s3_server"))
    live = start_live_server(settings, fake_engine)
    yield live
    live.stop()


def sweep(server, hours_ahead: float) -> None:
    """Upkeep's sweep (job records kept 7 days, the default) as it would run hours_ahead from now."""
    settings = server.api.settings
    upkeep = Upkeep(server.store, server.api.blobs, UpkeepSettings(), settings.leases)
    upkeep.sweep(time.time() + hours_ahead * HOUR)


def fetch(url: str) -> httpx.Response:
    """A GET as a client makes it: fluxserve's /files/ URL, followed to the bucket on S3."""
    return httpx.get(url, follow_redirects=True, trust_env=False, timeout=30)


def test_an_output_outlives_its_purged_job_record(server):
    with server.client() as http:
        done = http.post(RUN, json=INPUT).json()
        job = http.post(f"/queue{RUN}", json=INPUT).json()
        url = done["images"][0]["url"]
        assert fetch(url).status_code == 200
        sweep(server, hours_ahead=8 * 24)  # past the job records' 7 days
        assert http.get(job["response_url"]).status_code == 404, "the job record is purged"
    kept = fetch(url)
    assert kept.status_code == 200 and kept.content[:3] == b"\xff\xd8\xff", "its image stays (fal's default)"


def test_the_js_client_storage_settings_expire_outputs_and_uploads(server):
    out = node_client(server.url, "lifecycle")
    urls = {name: out[name] for name in ("run", "queued", "kept", "uploaded")}
    assert all(fetch(url).status_code == 200 for url in urls.values()), urls
    sweep(server, hours_ahead=0.5)  # past the queued one's 120 s only
    assert fetch(urls["queued"]).status_code == 404
    assert fetch(urls["run"]).status_code == 200 and fetch(urls["uploaded"]).status_code == 200
    sweep(server, hours_ahead=1.1)  # past "1h"
    assert fetch(urls["run"]).status_code == 404 and fetch(urls["uploaded"]).status_code == 404
    sweep(server, hours_ahead=24 * 365)
    assert fetch(urls["kept"]).status_code == 200, "no preference: the server's default, kept until deleted"


def test_the_server_default_expires_outputs_a_request_may_override(tmp_path, fake_engine):
    server = start_live_server(make_settings(tmp_path, output_retention_s=2 * HOUR), fake_engine)
    try:
        with server.client() as http:
            default = http.post(RUN, json=INPUT).json()["images"][0]["url"]
            forever = http.post(RUN, json=INPUT, headers=lifecycle(None)).json()["images"][0]["url"]
            # initial_acl (fal's: who may read a file) is ignored: any holder of a file's URL may read it.
            preference = {"expiration_duration_seconds": 60, "initial_acl": {"default": "forbid"}}
            acl = {HEADER: json.dumps(preference)}
            short = http.post(f"/queue{RUN}", json=INPUT, headers=acl).json()
            short_url = http.get(wait_completed(http, short)).json()["images"][0]["url"]
        sweep(server, hours_ahead=1)
        assert [fetch(u).status_code for u in (default, forever, short_url)] == [200, 200, 404]
        sweep(server, hours_ahead=2.1)
        assert [fetch(u).status_code for u in (default, forever)] == [404, 200]
    finally:
        server.stop()


def wait_completed(http: httpx.Client, handle: dict) -> str:
    """The result URL of a queued request, once it completed."""
    wait_status(http, handle)
    return handle["response_url"]


def test_fal_client_upload_lifecycle_expires_the_upload(server, monkeypatch):
    for name, value in (("REST_URL", server.url), ("CDN_URL", server.url)):
        monkeypatch.setattr(fal_client.client, name, value)
    client = fal_client.SyncClient(key="any:key")
    settings = fal_client.client.StorageSettings(expires_in="1h")
    short = client.upload(PNG, "image/png", lifecycle=settings)
    plain = client.upload(PNG, "image/png")
    sweep(server, hours_ahead=1.1)
    assert fetch(short).status_code == 404
    assert fetch(plain).status_code == 200, "without a lifecycle: the upload retention (1 day)"


def signed_at(presigned: str) -> datetime.datetime:
    """When a presigned URL was signed (X-Amz-Date); it is good for X-Amz-Expires seconds from then."""
    stamp = parse_qs(urlsplit(presigned).query)["X-Amz-Date"][0]
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")


def test_an_s3_output_url_outlives_the_presign_lifetime(tmp_path, fake_engine, s3_server):
    server = start_live_server(on_s3(make_settings(tmp_path), s3_server), fake_engine)
    try:
        with server.client() as http:
            url = http.post(RUN, json=INPUT, headers=lifecycle(30 * 24 * HOUR)).json()["images"][0]["url"]
            assert url.startswith(server.url + "/files/"), "the URL kept is fluxserve's, not a presigned one"
            first = http.get(url)
            assert first.status_code == 307 and first.headers["cache-control"] == "no-store"
            assert parse_qs(urlsplit(first.headers["location"]).query)["X-Amz-Expires"] == ["1"]
            time.sleep(2.1)  # past the first target's 1 s (moto does not enforce it: its dates are compared)
            second = http.get(url)
            assert second.status_code == 307
            assert signed_at(second.headers["location"]) > signed_at(first.headers["location"]) + ONE_SECOND
            served = fetch(url)
            assert served.status_code == 200 and served.content[:3] == b"\xff\xd8\xff"
            sweep(server, hours_ahead=31 * 24)
            assert http.get(url).status_code == 404, "an expired object: 404, not a redirect to an error"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "value",
    ["not json", "[3600]", '"3600"', json.dumps({"expiration_duration_seconds": 0}),
     json.dumps({"expiration_duration_seconds": -5}), json.dumps({"expiration_duration_seconds": "1h"}),
     json.dumps({"expiration_duration_seconds": True}), json.dumps({"expiration_duration_seconds": 1e300})],
)  # fmt: skip
def test_a_bad_lifecycle_header_is_a_422_naming_it(fake_server, fake_engine, value):
    with fake_server.client() as http:
        for path, header in ((RUN, HEADER), (f"/queue{RUN}", HEADER), (f"{RUN}/stream", HEADER),
                             ("/storage/upload/initiate", HEADER),
                             ("/storage/upload/initiate", "x-fal-object-lifecycle")):  # fmt: skip
            refused = http.post(path, json=INPUT, headers={header: value})
            assert refused.status_code == 422, (path, refused.text)
            assert refused.json()["detail"][0]["loc"] == ["header", header], refused.json()
        upload = http.post("/files/upload", content=PNG, headers={"x-fal-object-lifecycle": value})
        assert upload.status_code == 422
        assert upload.json()["detail"][0]["loc"] == ["header", "x-fal-object-lifecycle"]
    assert fake_engine.calls == []
