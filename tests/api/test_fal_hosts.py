"""Pointing fal's clients at fluxserve changes only hosts: the real fal_client given only FAL_RUN_HOST (so it
derives queue.<host>) submits, polls and reads results; fal's proxy protocol (`/proxy` + x-fal-target-url)
serves fal's URLs in process and refuses any other target; CORS headers ride on refusals too."""

from __future__ import annotations

import importlib
import json
from urllib.parse import urlsplit

import fal_client
import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.network import loopback_subdomains  # noqa: F401  (fixture)

APP = "fal-ai/flux/schnell"
ARGS = {"prompt": "a cat", "image_size": "square", "seed": 2}
PAGE = "http://app.example:5173"


def reload_fal_client() -> None:
    """fal_client reads its hosts at import, as a user's program does: re-import it under this environment."""
    importlib.reload(fal_client.auth)
    importlib.reload(fal_client.client)
    importlib.reload(fal_client)


@pytest.fixture
def fal_by_host(fake_server, monkeypatch, loopback_subdomains):  # noqa: F811
    port = urlsplit(fake_server.https_url).port
    monkeypatch.setenv("FAL_KEY", "anything")
    monkeypatch.setenv("FAL_RUN_HOST", f"localhost:{port}")
    monkeypatch.delenv("FAL_QUEUE_RUN_HOST", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(fake_server.cert))
    reload_fal_client()
    yield fal_client
    monkeypatch.undo()
    reload_fal_client()


def test_fal_client_with_only_the_run_host_uses_the_derived_queue_host(fal_by_host):
    port = urlsplit(fal_by_host.client.QUEUE_URL_FORMAT).port
    assert fal_by_host.client.QUEUE_URL_FORMAT == f"https://queue.localhost:{port}/"
    handle = fal_by_host.submit(APP, arguments=ARGS)
    assert urlsplit(handle.status_url).hostname == "queue.localhost"
    assert isinstance(handle.status(), (fal_by_host.Queued, fal_by_host.InProgress, fal_by_host.Completed))
    result = handle.get()
    assert result["seed"] == 2 and len(result["images"]) == 1
    assert fal_by_host.result(APP, handle.request_id) == result
    assert isinstance(fal_by_host.status(APP, handle.request_id), fal_by_host.Completed)
    assert fal_by_host.run(APP, arguments=ARGS)["seed"] == 2, "the run host still serves the run route"


def proxied(http, method, target, **kwargs):
    headers = {"x-fal-target-url": target, **kwargs.pop("headers", {})}
    return http.request(method, "/proxy", headers=headers, **kwargs)


def test_the_proxy_serves_fal_urls_in_process(fake_server):
    with fake_server.client() as http:
        submitted = proxied(http, "POST", f"https://queue.fal.run/{APP}", json=ARGS)
        assert submitted.status_code == 200, submitted.text
        request_id = submitted.headers["x-fal-request-id"]
        assert submitted.json()["request_id"] == request_id
        base = f"https://queue.fal.run/fal-ai/flux/requests/{request_id}"
        stream = {"x-fal-target-url": f"{base}/status/stream?logs=1"}
        with http.stream("GET", "/proxy", headers=stream) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            assert events.headers["x-fal-request-id"] == request_id
            last = [json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:")][-1]
        assert last["status"] == "COMPLETED"
        assert proxied(http, "GET", f"{base}/status?logs=0").json()["status"] == "COMPLETED"
        assert proxied(http, "GET", base).json()["seed"] == 2
        assert proxied(http, "PUT", f"{base}/cancel").json()["status"] == "ALREADY_COMPLETED"
        assert proxied(http, "POST", f"https://fal.run/{APP}", json=ARGS).json()["seed"] == 2
        initiated = proxied(http, "POST", "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
                            json={"content_type": "image/png", "file_name": "x.png"})  # fmt: skip
        assert initiated.json()["upload_url"].startswith(f"{fake_server.url}/storage/upload/")
        assert proxied(http, "POST", f"https://queue.fal.run/{APP}", json={"prompt": 1}).status_code == 422


@pytest.mark.parametrize("target", [None, "https://example.com/fal-ai/flux/schnell", "http://10.0.0.1:6379/"])
def test_the_proxy_is_not_an_open_proxy(fake_server, target):
    with fake_server.client() as http:
        headers = {} if target is None else {"x-fal-target-url": target}
        refused = http.post("/proxy", headers=headers, json=ARGS)
    assert refused.status_code == 400
    assert refused.json()["detail"][0]["loc"] == ["header", "x-fal-target-url"]


@pytest.fixture
def cors_server(tmp_path):
    server = start_live_server(make_settings(tmp_path, auth=True, cors_origins=(PAGE,), max_body_bytes=1024),
                               FakeEngine())  # fmt: skip
    yield server, add_keys(server.store, "alice")["alice"]
    server.stop()


def test_cors_preflight_and_refusals_carry_the_headers(cors_server):
    server, key = cors_server
    with server.client(headers={"origin": PAGE}) as http:
        asked = "authorization,content-type,x-fal-queue-priority,x-fal-target-url"
        preflight = http.options(f"/queue/{APP}", headers={
            "access-control-request-method": "POST", "access-control-request-headers": asked})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == PAGE
        upload_preflight = http.options("/storage/upload/k.png?token=t", headers={
            "access-control-request-method": "PUT", "access-control-request-headers": "content-type"})
        assert upload_preflight.status_code == 200
        too_large = {**ARGS, "prompt": "x" * 2000}
        for refused, code in ((http.post(f"/queue/{APP}", json=ARGS), 401),
                              (http.post(f"/queue/{APP}", headers=key, json=too_large), 413)):
            assert refused.status_code == code
            assert refused.headers["access-control-allow-origin"] == PAGE
        accepted = http.post(f"/queue/{APP}", headers=key, json=ARGS)
        assert accepted.headers["access-control-allow-origin"] == PAGE
        assert "x-fal-request-id" in accepted.headers["access-control-expose-headers"]
    with server.client(headers={"origin": "http://evil.example"}) as http:
        refused = http.options(f"/queue/{APP}", headers={"access-control-request-method": "POST"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        assert "access-control-allow-origin" not in http.get("/health").headers


def test_no_cors_headers_by_default(fake_server):
    with fake_server.client(headers={"origin": PAGE}) as http:
        assert "access-control-allow-origin" not in http.get("/health").headers
        preflight = http.options(f"/queue/{APP}", headers={"access-control-request-method": "POST"})
        assert preflight.status_code == 405
