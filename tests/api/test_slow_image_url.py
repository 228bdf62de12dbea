"""A slow image_url holds up only its own request: another key's text job submitted after it completes while
the image server still holds its response (issue 12: a slow image_url held the GPU idle up to the fetch
timeout)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.images import ImageOrigin
from tests.support.waits import wait_result, wait_status

pytestmark = pytest.mark.abuse

# Shorter than the default 10 s fetch timeout, so the fetch succeeds; far longer than a text job takes.
HOLD_S = 6.0


@pytest.fixture
def keyed_redux_server(tmp_path) -> Iterator[tuple[object, dict[str, dict[str, str]]]]:
    """Auth on, Redux on (fake engine), loopback allowed for fetched URLs (make_settings' URL policy)."""
    server = start_live_server(make_settings(tmp_path, redux_enabled=True, auth=True), FakeEngine())
    yield server, add_keys(server.store, "alice", "bob")
    server.stop()


def test_another_keys_text_job_completes_while_a_slow_image_url_is_fetched(keyed_redux_server):
    server, keys = keyed_redux_server
    origin = ImageOrigin(hold_s=HOLD_S)
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
            wait_status(http, handle, "IN_PROGRESS", timeout=10, headers=keys["alice"])

            origin.release.set()
            result = wait_result(http, handle, headers=keys["alice"])
    finally:
        origin.close()
    assert result.status_code == 200, result.text
    assert [(image["width"], image["height"]) for image in result.json()["images"]] == [(512, 512)]
