"""The real fal_client (sync and async) speaking the queue protocol to fluxserve (fake engine)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.support.fal_clients import point_fal_client
from tests.support.waits import wait_status, wait_until

APP = "fal-ai/flux/schnell"
ARGS = {"prompt": "a cat", "image_size": "square", "seed": 2}


@pytest.fixture
def fal(fake_server, monkeypatch):
    """fal_client pointed at the live server; plain HTTP by the documented URL-format switch."""
    return point_fal_client(monkeypatch, fake_server.url)


def test_submit_status_with_logs_and_result(fal):
    handle = fal.submit(APP, arguments=ARGS)
    assert handle.request_id
    deadline = time.monotonic() + 20
    while not isinstance(status := handle.status(with_logs=True), fal.Completed):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status.error is None and any(log["message"] == "step 4/4" for log in status.logs)
    result = handle.get()
    assert result["seed"] == 2 and len(result["images"]) == 1
    assert fal.result(APP, handle.request_id) == result
    assert isinstance(fal.status(APP, handle.request_id), fal.Completed)


def test_subscribe_sees_falling_positions_then_step_logs(fal, fake_engine):
    fake_engine.step_s = 0.1  # each job takes 0.4 s: the client's 0.1 s polls see every position
    fake_engine.gate.clear()
    # The first blocker running (held), the second queued behind it: the subscribed job starts at position 1.
    blockers = [fal.submit(APP, arguments=ARGS)]
    wait_until(lambda: isinstance(blockers[0].status(), fal.InProgress), what="the first blocker to run")
    blockers.append(fal.submit(APP, arguments=ARGS))
    updates, enqueued = [], []
    threading.Timer(0.6, fake_engine.gate.set).start()
    result = fal.subscribe(
        APP, arguments={**ARGS, "seed": 9}, with_logs=True, on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )  # fmt: skip
    assert result["seed"] == 9 and enqueued
    positions = [u.position for u in updates if isinstance(u, fal.Queued)]
    assert positions[0] == 1 and 0 in positions and positions == sorted(positions, reverse=True)
    progress_logs = [log["message"] for u in updates if isinstance(u, fal.InProgress) for log in u.logs]
    assert any(m.startswith("step ") for m in progress_logs)
    kinds = [type(u).__name__ for u in updates]
    assert kinds.index("InProgress") > kinds.index("Queued")
    for b in blockers:
        b.get()


def test_cancel_queued_and_running(fal, fake_engine):
    fake_engine.gate.clear()
    running = fal.submit(APP, arguments={**ARGS, "num_inference_steps": 12})
    queued = fal.submit(APP, arguments=ARGS)
    fal.cancel(APP, queued.request_id)
    done = fal.status(APP, queued.request_id)
    assert isinstance(done, fal.Completed) and done.error_type == "client_cancelled"
    while not isinstance(running.status(), fal.InProgress):
        time.sleep(0.01)
    running.cancel()
    fake_engine.gate.set()
    end = running.status(with_logs=True)
    assert isinstance(end, fal.Completed) and end.error_type == "client_cancelled"
    with pytest.raises(fal.FalClientHTTPError) as info:
        running.cancel()
    assert info.value.status_code == 400
    with pytest.raises(fal.FalClientHTTPError) as info:
        running.get()
    assert info.value.status_code == 499


def test_failed_job_raises_with_the_stored_error(fal):
    handle = fal.submit(APP, arguments={"prompt": "explode"})
    with pytest.raises(fal.FalClientHTTPError) as info:
        handle.get()
    assert info.value.status_code == 500 and "forced failure" in str(info.value.message)


def test_async_client(fal):
    async def main():
        result = await fal.subscribe_async(APP, arguments=ARGS, with_logs=True)
        handle = await fal.submit_async(APP, arguments={**ARGS, "seed": 4})
        events = [event async for event in handle.iter_events(with_logs=True, interval=0.02)]
        return result, events, await handle.get()

    result, events, second = asyncio.run(main())
    assert result["seed"] == 2 and second["seed"] == 4
    assert events and isinstance(events[-1], fal.Completed) or events


def test_run_is_still_the_same_job_path(fal, fake_server):
    out = fal.run(APP, arguments=ARGS)
    assert out["seed"] == 2 and out["images"][0]["url"].startswith(fake_server.url + "/files/")


def test_store_io_0_hands_the_result_out_once_and_keeps_no_payload(fal, fake_server):
    """fal's `headers={"X-Fal-Store-IO": "0"}`: the payloads are not kept; the images stay at their URLs."""
    handle = fal.submit(APP, arguments={**ARGS, "prompt": "a private cat"}, headers={"X-Fal-Store-IO": "0"})
    result = handle.get()
    assert result["prompt"] == "a private cat"
    with pytest.raises(fal.FalClientHTTPError) as again:
        fal.result(APP, handle.request_id)
    assert again.value.status_code == 410
    assert fake_server.store.get(handle.request_id).spec.prompt == ""
    with fake_server.client() as http:
        assert http.get(result["images"][0]["url"]).status_code == 200
    kept = fal.submit(APP, arguments=ARGS, headers={"X-Fal-Store-IO": "1"})
    assert kept.get() == fal.result(APP, kept.request_id), "any other value keeps them, as on fal"


def test_priority_low_waits_behind_a_later_normal_request(fal, fake_server, fake_engine):
    """fal_client's `priority=` on submit: a low request submitted first runs after a normal one."""
    fake_engine.gate.clear()
    try:
        with fake_server.client() as http:
            blocker = http.post(f"/queue/{APP}", json={"prompt": "blocker", "image_size": "square"}).json()
            wait_status(http, blocker, "IN_PROGRESS", timeout=10)
        low = fal.submit(APP, arguments={**ARGS, "prompt": "low"}, priority="low")
        normal = fal.submit(APP, arguments={**ARGS, "prompt": "normal"}, priority="normal")
        assert [handle.status().position for handle in (low, normal)] == [1, 0]
    finally:
        fake_engine.gate.set()
    low.get(), normal.get()
    assert [call.prompt for call in fake_engine.calls] == ["blocker", "normal", "low"]
