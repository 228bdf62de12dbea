"""API keys (fal's `Authorization: Key id:secret`), per-key isolation, and usage in megapixels."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import fal_client
import pytest

from fluxserve.core.accounts import new_key
from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.waits import wait_result, wait_status

RUN = "/fal-ai/flux/schnell"


@pytest.fixture
def secured(tmp_path):
    server = start_live_server(make_settings(tmp_path, auth=True), FakeEngine())
    keys = {}
    for name, admin in (("alice", False), ("bob", False), ("ops", True), ("gone", False)):
        key, credential = new_key(name, admin=admin)
        server.store.create_key(key)
        keys[name] = (key.key_id, {"authorization": f"Key {credential}"})
    server.store.revoke_key(keys["gone"][0])
    yield server, keys
    server.stop()


def test_requests_without_a_valid_key_get_a_401(secured):
    server, keys = secured
    with server.client() as http:
        for headers in ({}, {"authorization": "Key fsk_nope:wrong"}, keys["gone"][1],
                        {"authorization": f"Key {keys['alice'][0]}:wrong-secret"}):  # fmt: skip
            r = http.post(RUN, json={"prompt": "x"}, headers=headers)
            assert r.status_code == 401 and r.json()["detail"], headers
        assert http.post("/queue" + RUN, json={"prompt": "x"}).status_code == 401
        assert http.post("/files/upload", content=b"x").status_code == 401
        assert http.get("/health").status_code == 200 and http.get("/openapi.json").status_code == 200
        ok = http.post(RUN, json={"prompt": "x", "image_size": "square"}, headers=keys["alice"][1])
        assert ok.status_code == 200
        assert http.get(ok.json()["images"][0]["url"]).status_code == 200, "image URLs stay fetchable"


def test_a_key_sees_only_its_own_requests_and_an_admin_sees_all(secured):
    server, keys = secured
    with server.client() as http:
        handle = http.post("/queue" + RUN, json={"prompt": "x", "image_size": "square"},
                           headers=keys["alice"][1]).json()  # fmt: skip
        rid = handle["request_id"]
        for path, method in ((f"/queue/fal-ai/flux/requests/{rid}/status", "GET"),
                             (f"/queue/fal-ai/flux/requests/{rid}", "GET"),
                             (f"/queue/fal-ai/flux/requests/{rid}/status/stream", "GET"),
                             (f"/queue/fal-ai/flux/requests/{rid}/cancel", "PUT")):  # fmt: skip
            assert http.request(method, path, headers=keys["bob"][1]).status_code == 404, path
        wait_status(http, handle, "COMPLETED", headers=keys["alice"][1])
        assert http.get(handle["response_url"], headers=keys["alice"][1]).status_code == 200
        assert http.get(handle["response_url"], headers=keys["ops"][1]).status_code == 200


def test_fal_client_sends_its_key_as_fal_does(secured, monkeypatch):
    server, keys = secured
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{server.url}/")
    good = fal_client.SyncClient(key=keys["bob"][1]["authorization"].removeprefix("Key "))
    assert good.run("fal-ai/flux/schnell", arguments={"prompt": "x", "image_size": "square"})["images"]
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_client.SyncClient(key="fsk_nope:nope").run("fal-ai/flux/schnell", arguments={"prompt": "x"})
    assert info.value.status_code == 401


# What fal's own credentials look like: a fal.ai key (`<uuid>:<hex>`) and the JWT `fal auth login` saves.
FAL_AI_KEY = "4f9c2b1e-7d3a-4c8e-9b0f-1a2b3c4d5e6f:0123456789abcdef0123456789abcdef"


def fal_login_jwt() -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {"sub": "github|42", "exp": int(time.time()) + 3600}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_a_401_says_which_credential_it_got_and_what_to_do(secured):
    server, keys = secured
    token = fal_login_jwt()
    cases = {
        "": "Missing credentials",
        f"Bearer {token}": "`fal auth login`",
        f"Key {FAL_AI_KEY}": "not issued by this server",
        f"Key {keys['alice'][0]}:wrong-secret": "Invalid API key",
        keys["gone"][1]["authorization"]: "revoked",
        "Key fsk_no_secret_given": "Malformed API key",
        "Basic dXNlcjpwYXNz": "Unsupported Authorization scheme",
    }  # fmt: skip
    with server.client() as http:
        for header, said in cases.items():
            r = http.post(RUN, json={"prompt": "x"}, headers={"authorization": header} if header else {})
            detail = r.json()["detail"]
            assert r.status_code == 401 and said in detail, (header, detail)
            assert "fluxserve keys create" in detail and "Authorization: Key <key id>:<secret>" in detail
            assert r.headers["www-authenticate"] == "Key", "RFC 9110 §11.6.1: a 401 names the scheme it takes"
            secret = header.partition(" ")[2].rpartition(":")[2]
            assert not secret or secret not in r.text, "a 401 never repeats the credential"


def test_fal_client_with_fal_credentials_is_told_to_create_a_fluxserve_key(secured, monkeypatch, tmp_path):
    server, _ = secured
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{server.url}/")
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    # `fal auth login`'s file: a refresh token, then an access token still valid (so no refresh is attempted).
    (tmp_path / "auth0_token").write_text(f"refresh-token\n{fal_login_jwt()}\n")
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))
    with pytest.raises(fal_client.FalClientHTTPError) as login:
        fal_client.SyncClient().run("fal-ai/flux/schnell", arguments={"prompt": "x"})
    monkeypatch.setenv("FAL_KEY", FAL_AI_KEY)
    with pytest.raises(fal_client.FalClientHTTPError) as fal_key:
        fal_client.SyncClient().run("fal-ai/flux/schnell", arguments={"prompt": "x"})
    assert login.value.status_code == 401 and "`fal auth login`" in login.value.message
    assert fal_key.value.status_code == 401 and "not issued by this server" in fal_key.value.message
    for refused in (login.value, fal_key.value):
        assert "fluxserve keys create" in refused.message and "FAL_KEY=<key id>:<secret>" in refused.message


def test_usage_is_counted_per_key_in_megapixels_rounded_up(secured):
    server, keys = secured
    with server.client() as http:
        alice, bob, ops = keys["alice"][1], keys["bob"][1], keys["ops"][1]
        http.post(RUN, json={"prompt": "a", "image_size": "square_hd", "num_images": 2}, headers=alice)  # 2 x 2 MP
        http.post(RUN, json={"prompt": "b", "image_size": "square"}, headers=alice)  # 1 MP (0.26, rounded up)
        http.post(RUN, json={"prompt": "explode"}, headers=alice)  # a server-side failure: not counted
        http.post(RUN, json={"prompt": "c", "image_size": "landscape_16_9"}, headers=bob)  # 1 MP (0.59)
        mine = http.get("/usage", headers=alice).json()
        theirs = http.get("/usage", headers=bob).json()
        everyone = http.get("/usage", headers=ops).json()
    assert mine["total_megapixels"] == 5 and {r["key_id"] for r in mine["usage"]} == {keys["alice"][0]}
    assert mine["usage"][0]["requests"] == 2 and mine["usage"][0]["images"] == 3
    assert theirs["total_megapixels"] == 1
    assert everyone["total_megapixels"] == 6


def test_keys_and_usage_commands(tmp_path):
    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "fluxserve", *args, "--data-dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    created = cli("keys", "create", "--name", "team-a")
    assert "export FAL_KEY=fsk_" in created
    key_id = created.split("FAL_KEY=")[1].split(":")[0]
    assert key_id in cli("keys", "list") and "team-a" in cli("keys", "list")
    assert f"revoked {key_id}" in cli("keys", "revoke", key_id)
    assert "revoked" in cli("keys", "list")
    assert "total megapixels: 0" in cli("usage")


def test_auth_defaults_follow_the_bind_address():
    from fluxserve.cli.main import build_parser, settings_from_args

    def auth(*argv):
        return settings_from_args(build_parser({}).parse_args(["serve", *argv])).api.auth

    assert auth() is False and auth("--host", "0.0.0.0") is True
    assert auth("--host", "0.0.0.0", "--auth", "off") is False and auth("--auth", "on") is True


def test_one_key_flooding_the_queue_does_not_starve_another(secured):
    server, keys = secured
    engine = server.worker.engine
    engine.gate.clear()
    with server.client() as http:
        a = [http.post("/queue" + RUN, json={"prompt": f"a{i}", "image_size": "square"},
                       headers=keys["alice"][1]).json()["request_id"] for i in range(50)]  # fmt: skip
        b = http.post("/queue" + RUN, json={"prompt": "b", "image_size": "square"},
                      headers=keys["bob"][1]).json()["request_id"]  # fmt: skip
        engine.gate.set()
        wait_result(http, {"response_url": f"/queue/fal-ai/flux/requests/{b}"}, headers=keys["bob"][1])
    started = sorted((server.store.get(i) for i in [*a, b] if server.store.get(i).started_at),
                     key=lambda j: j.started_at)  # fmt: skip
    assert [j.id for j in started].index(b) <= 2, "B's job starts within the next few jobs"


def test_with_auth_on_ready_needs_a_key_metrics_an_admin_key_and_health_nothing(secured):
    server, keys = secured
    with server.client() as http:
        assert http.get("/health").status_code == 200
        for path in ("/ready", "/metrics"):
            r = http.get(path)
            assert r.status_code == 401 and r.json()["detail"], path
            assert http.get(path, headers=keys["gone"][1]).status_code == 401, path
        assert http.get("/ready", headers=keys["alice"][1]).status_code in (200, 503)
        forbidden = http.get("/metrics", headers=keys["alice"][1])
        assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
        scraped = http.get("/metrics", headers=keys["ops"][1])
        assert scraped.status_code == 200 and "fluxserve_http_requests_total" in scraped.text


@pytest.fixture
def rate_limited(tmp_path):
    # One token every 10 s, two at once: the third quick submit of a key is refused.
    settings = make_settings(tmp_path, auth=True, submit_rate=0.1, submit_burst=2)
    server = start_live_server(settings, FakeEngine())
    yield server, add_keys(server.store, "alice", "bob")
    server.stop()


def test_submits_beyond_a_keys_rate_get_a_429_with_retry_after_and_other_keys_are_not_affected(rate_limited):
    server, keys = rate_limited
    body = {"prompt": "x", "image_size": "square"}
    with server.client() as http:
        assert http.post("/queue" + RUN, json=body, headers=keys["alice"]).status_code == 200
        sync = http.post(RUN, json=body, headers=keys["alice"])
        assert sync.status_code == 200, "the run and queue endpoints share a key's bucket"
        refused = http.post("/queue" + RUN, json=body, headers=keys["alice"])
        assert refused.status_code == 429 and refused.json()["error_type"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 10 and refused.headers["x-fal-error-type"]
        assert http.post(RUN, json=body, headers=keys["alice"]).status_code == 429
        assert http.post(RUN, json=body, headers=keys["bob"]).status_code == 200, "bob has his own bucket"
        status = http.get("/usage", headers=keys["alice"])
        assert status.status_code == 200, "only submits are limited"
