"""POST /{app}/stream through the real fal_client (sync and async): a progress event per step, then the output
the sync route gives; a failure ends with fal's error body; a hang-up cancels the job."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import fal_client
import httpx
import pytest
from PIL import Image

from tests.api.test_js_client import node_client
from tests.conftest import make_settings, start_live_server
from tests.support.waits import wait_until

APP = "fal-ai/flux/schnell"
ARGS = {"prompt": "a cat", "image_size": "square", "seed": 5, "num_inference_steps": 3}


@pytest.fixture
def fal(fake_server, monkeypatch):
    monkeypatch.setenv("FAL_KEY", "anything")
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{fake_server.url}/")
    return fal_client


def comparable(output: dict) -> dict:
    """An output less what differs between two jobs of the same input: the stored file's URL, the timings."""
    images = [{k: v for k, v in image.items() if k != "url"} for image in output["images"]]
    return {**{k: v for k, v in output.items() if k != "timings"}, "images": images}


def assert_steps_then_output(events: list[dict], expected: dict) -> None:
    steps, final = events[:-1], events[-1]
    assert [(e["step"], e["message"]) for e in steps] == [(k, f"step {k}/3") for k in range(1, 4)]
    assert {e["total"] for e in steps} == {3}
    assert [e["progress"] for e in steps] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert {e["status"] for e in steps} == {"IN_PROGRESS"} and len({e["request_id"] for e in steps}) == 1
    assert comparable(final) == comparable(expected)
    assert httpx.get(final["images"][0]["url"]).status_code == 200


def test_sync_stream_sends_each_step_then_the_sync_output(fal, fake_server):
    events = list(fal.stream(APP, arguments=ARGS))
    assert_steps_then_output(events, fake_server.client().post(f"/{APP}", json=ARGS).json())


def test_async_stream_sends_each_step_then_the_sync_output(fal, fake_server):
    async def collect() -> list[dict]:
        return [event async for event in fal.AsyncClient().stream(APP, arguments=ARGS)]

    events = asyncio.run(collect())
    assert_steps_then_output(events, fake_server.client().post(f"/{APP}", json=ARGS).json())


def test_failed_job_ends_the_stream_with_fal_error_body(fal):
    seen = list(fal.stream(APP, arguments={**ARGS, "prompt": "explode"}))
    assert len(seen) == 1  # the fake engine fails before its first step
    assert seen[-1]["error_type"] == "internal_error" and seen[-1]["status"] == 500
    assert "Generation failed" in seen[-1]["detail"] and seen[-1]["request_id"]


def test_bad_input_is_a_plain_422_before_any_stream(fake_server):
    reply = fake_server.client().post(f"/{APP}/stream", json={**ARGS, "num_inference_steps": 0})
    assert reply.status_code == 422 and reply.headers["content-type"] == "application/json"
    assert any("num_inference_steps" in item["loc"] for item in reply.json()["detail"])


def test_hanging_up_mid_stream_cancels_the_job(fake_server, fake_engine):
    fake_engine.gate.clear()  # the job stops at its first step until released
    with fake_server.client() as client, client.stream("POST", f"/{APP}/stream", json=ARGS) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        request_id = reply.headers["x-fal-request-id"]
        wait_until(lambda: fake_server.store.get(request_id).status.value == "running")
    # Cancelled while the engine is still held: it could not have finished first.
    wait_until(lambda: fake_server.store.get(request_id).status.value == "cancelled")
    fake_engine.gate.set()


def test_js_stream_sends_each_step_then_the_output_done_resolves_with(fake_server):
    observed = node_client(fake_server.url, "stream")
    events, expected = observed["events"], {**ARGS, "prompt": "a lighthouse at dusk"}
    assert_steps_then_output(events, fake_server.client().post(f"/{APP}", json=expected).json())
    assert observed["done"] == events[-1] and observed["requestId"] == events[0]["request_id"]


def test_js_stream_of_a_failed_job_ends_with_fal_error_body(fake_server):
    observed = node_client(fake_server.url, "stream-failed")
    assert observed["done"]["error_type"] == "internal_error" and observed["done"]["status"] == 500
    assert observed["events"] == [observed["done"]]


def preview_sizes(event: dict) -> list[tuple[int, int]]:
    """The decoded size of each preview image a step event carries (it must be a JPEG data: URI)."""
    sizes = []
    for image in event.get("images", []):
        head, _, data = image["url"].partition(",")
        assert head == "data:image/jpeg;base64" and image["content_type"] == "image/jpeg"
        decoded = Image.open(io.BytesIO(base64.b64decode(data)))
        assert decoded.format == "JPEG" and decoded.size == (image["width"], image["height"])
        sizes.append(decoded.size)
    return sizes


@pytest.fixture
def previews_server(tmp_path, fake_engine):
    server = start_live_server(make_settings(tmp_path, stream_previews=True), fake_engine)
    yield server
    server.stop()


def test_with_previews_on_each_step_event_carries_a_latent_sized_jpeg(
    previews_server, fake_engine, monkeypatch
):
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{previews_server.url}/")
    monkeypatch.setenv("FAL_KEY", "anything")
    events = list(fal_client.stream(APP, arguments={**ARGS, "num_images": 2}))
    assert [preview_sizes(event) for event in events[:-1]] == [[(64, 64), (64, 64)]] * 3
    assert all(image["width"] == 512 for image in events[-1]["images"])
    # The queue's status logs stay fal's: no preview lines in them.
    logs = (
        previews_server.client().get(f"/queue/{APP}/requests/{events[0]['request_id']}/status?logs=1").json()
    )
    assert [line["message"] for line in logs["logs"] if line["message"].startswith("data:")] == []
    # Only /stream jobs compute them, even on this server.
    assert previews_server.client().post(f"/{APP}", json=ARGS).status_code == 200
    assert [spec.previews for spec in fake_engine.calls] == [True, False]


def test_with_previews_off_step_events_carry_no_images(fal):
    assert all("images" not in event for event in list(fal.stream(APP, arguments=ARGS))[:-1])


def test_keep_alive_comments_while_the_job_waits(tmp_path, fake_engine):
    server = start_live_server(make_settings(tmp_path, waiting={"keepalive_s": 0.05}), fake_engine)
    fake_engine.gate.clear()
    try:
        with server.client() as client, client.stream("POST", f"/{APP}/stream", json=ARGS) as reply:
            lines = reply.iter_lines()
            assert wait_until(lambda: next(lines) == ": keep-alive", what="a keep-alive comment")
            fake_engine.gate.set()
            assert json.loads(list(lines)[-2].removeprefix("data: "))["seed"] == 5
    finally:
        fake_engine.gate.set()
        server.stop()
