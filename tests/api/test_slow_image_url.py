"""A slow image_url holds up only its own request: another key's text job submitted after it completes while
the image server still holds its response (issue 12: a slow image_url held the GPU idle up to the fetch
timeout)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.e2e.test_redux import png_data_uri
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.abuse

# Shorter than the default 10 s fetch timeout, so the fetch succeeds; far longer than a text job takes.
HOLD_S = 6.0


class SlowOrigin:
    """An image server on loopback that holds each response until released (or HOLD_S)."""

    def __init__(self) -> None:
        requested, release = threading.Event(), threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                requested.set()
                release.wait(HOLD_S)
                data = base64.b64decode(png_data_uri().split(",", 1)[1])
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.requested, self.release = requested, release
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cat.png"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keyed_redux_server(tmp_path) -> Iterator[tuple[object, dict[str, dict[str, str]]]]:
    """Auth on, Redux on (fake engine), loopback allowed for fetched URLs (make_settings' URL policy)."""
    server = start_live_server(make_settings(tmp_path, redux_enabled=True, auth=True), FakeEngine())
    yield server, add_keys(server.store, "alice", "bob")
    server.stop()


def wait_status(http, handle: dict, headers: dict, status: str) -> None:
    deadline = time.monotonic() + 10
    while http.get(handle["status_url"], headers=headers).json()["status"] != status:
        assert time.monotonic() < deadline, f"never {status}"
        time.sleep(0.01)


def test_another_keys_text_job_completes_while_a_slow_image_url_is_fetched(keyed_redux_server):
    server, keys = keyed_redux_server
    origin = SlowOrigin()
    try:
        with server.client() as http:
            redux = http.post("/queue/fal-ai/flux/schnell/redux", headers=keys["alice"],
                              json={"image_url": origin.url, "image_size": "square"})  # fmt: skip
            assert redux.status_code == 200, redux.text
            handle = redux.json()
            assert origin.requested.wait(10), "the worker never fetched the image"

            started = time.monotonic()
            body = {"prompt": "a fox", "image_size": "square"}
            text = http.post("/fal-ai/flux/schnell", headers=keys["bob"], json=body)
            took = time.monotonic() - started
            assert text.status_code == 200, text.text
            assert took < 2.0, f"the text job waited {took:.1f} s behind another key's image fetch"
            assert not origin.release.is_set()
            wait_status(http, handle, keys["alice"], "IN_PROGRESS")

            origin.release.set()
            result = http.get(handle["response_url"], headers=keys["alice"])
            while result.status_code == 400:
                time.sleep(0.01)
                result = http.get(handle["response_url"], headers=keys["alice"])
    finally:
        origin.close()
    assert result.status_code == 200, result.text
    assert [(image["width"], image["height"]) for image in result.json()["images"]] == [(512, 512)]
