"""Writes are owned: an upload URL is issued to one key, for one fresh name, for one PUT, for a limited time;
uploads count against a per-key quota and are swept on the operator's schedule. Through a live server with
`--auth on`, a real fal_client, and the JS client's flow (a PUT without any Authorization)."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import urlsplit

import fal_client
import pytest

from fluxserve.blobs.uploads import Uploads
from fluxserve.processes.upkeep import Upkeep
from tests.api.test_served_files import PNG
from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.abuse

RUN = "/fal-ai/flux/schnell"
OTHER = b"the attacker's bytes"


def key_id(headers: dict[str, str]) -> str:
    return headers["authorization"].split()[1].split(":")[0]


def secured_server(tmp_path, **storage):
    settings = make_settings(tmp_path, auth=True)
    settings = dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, **storage))
    server = start_live_server(settings, FakeEngine())
    return server, add_keys(server.store, "alice", "bob")


@pytest.fixture
def secured(tmp_path):
    server, keys = secured_server(tmp_path)
    yield server, keys
    server.stop()


def initiate(http, headers) -> dict:
    r = http.post("/storage/upload/initiate", json={"content_type": "image/png", "file_name": "a.png"},
                  headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def upload_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_the_js_flow_works_with_auth_on_and_the_url_is_good_for_one_put(secured):
    server, keys = secured
    with server.client() as http:
        assert http.post("/storage/upload/initiate", json={}).status_code == 401
        init = initiate(http, keys["alice"])
        # No Authorization on the PUT, as @fal-ai/client sends it.
        put = http.put(init["upload_url"], content=PNG, headers={"content-type": "image/png"})
        assert put.status_code == 200, put.text
        again = http.put(init["upload_url"], content=OTHER)
        assert again.status_code == 403 and "already used" in again.json()["detail"]
        assert http.get(init["file_url"]).content == PNG


def test_a_put_cannot_overwrite_an_output_or_name_a_file_it_was_not_issued(secured):
    server, keys = secured
    with server.client() as http:
        bobs = http.post(RUN, json={"prompt": "x", "image_size": "square"}, headers=keys["bob"])
        image = bobs.json()["images"][0]
        output_key = image["url"].rsplit("/", 1)[1]
        init = initiate(http, keys["alice"])
        token = init["upload_url"].split("?token=")[1]
        before = http.get(image["url"]).content
        for path in (f"/storage/upload/{output_key}",  # no token at all (the attack in issue 12)
                     f"/storage/upload/{output_key}?token={token}",  # a real token, for another name
                     f"/storage/upload/{'a' * 32}.png?token={token}",  # a name the server never issued
                     upload_path(init["upload_url"]).replace(token, token[:-2] + "xx")):  # a forged secret
            r = http.put(path, content=OTHER, headers=keys["alice"])
            assert r.status_code == 403, (path, r.text)
            assert r.json()["detail"]
        assert http.get(image["url"]).content == before
        assert http.put(init["upload_url"], content=PNG).status_code == 200, "the real grant is still good"


def test_an_upload_url_expires(tmp_path):
    server, keys = secured_server(tmp_path, upload_url_ttl_s=0.3)
    try:
        with server.client() as http:
            init = initiate(http, keys["alice"])
            time.sleep(0.4)
            r = http.put(init["upload_url"], content=PNG)
            assert r.status_code == 403 and "expired" in r.json()["detail"]
            assert http.get(init["file_url"]).status_code == 404
    finally:
        server.stop()


def test_uploads_have_a_per_key_quota(tmp_path):
    server, keys = secured_server(tmp_path, upload_quota=2)
    try:
        with server.client() as http:
            first = initiate(http, keys["alice"])
            assert http.put(first["upload_url"], content=PNG).status_code == 200
            initiate(http, keys["alice"])  # issued and unused: still held until it expires
            refused = http.post("/storage/upload/initiate", json={}, headers=keys["alice"])
            assert refused.status_code == 429 and "quota" in refused.json()["detail"]
            direct = http.post("/files/upload", content=PNG, headers=keys["alice"])
            assert direct.status_code == 429
            assert http.post("/files/upload", content=PNG, headers=keys["bob"]).status_code == 200
    finally:
        server.stop()


def test_uploads_are_swept_after_their_retention(secured):
    server, keys = secured
    with server.client() as http:
        init = initiate(http, keys["alice"])
        assert http.put(init["upload_url"], content=PNG).status_code == 200
        unused = initiate(http, keys["alice"])
        output = http.post(RUN, json={"prompt": "x", "image_size": "square"}, headers=keys["alice"])
        settings = server.api.settings
        later = Uploads(server.api.blobs, settings.storage, clock=lambda: time.time() + 3600 * 24 + 60)
        upkeep = Upkeep(server.store, server.api.blobs, settings.upkeep, settings.leases, uploads=later)
        upkeep.sweep(time.time())
        assert http.get(init["file_url"]).status_code == 404
        assert http.put(unused["upload_url"], content=PNG).status_code == 403, "its grant was swept too"
        assert later.active(key_id(keys["alice"])) == 0
        kept = http.get(output.json()["images"][0]["url"])
        assert kept.status_code == 200, "outputs keep their own retention"


def test_fal_client_uploads_with_auth_on(secured, monkeypatch, caplog):
    server, keys = secured
    for name, value in (("REST_URL", server.url), ("CDN_URL", server.url)):
        monkeypatch.setattr(fal_client.client, name, value)
    client = fal_client.SyncClient(key=keys["bob"]["authorization"].removeprefix("Key "))
    url = client.upload(PNG, "image/png", "b.png")
    with server.client() as http:
        assert http.get(url).content == PNG
    assert server.api.app.state.uploads.active(key_id(keys["bob"])) == 1, "owned by the key that uploaded it"
    assert "falling back" not in caplog.text, "fal_v3's own flow (token, then POST /files/upload) worked"
