"""/ready: the states clients already read, and per worker what it runs (GPU, device, switches per level)."""

from __future__ import annotations

import dataclasses

from tests.conftest import make_settings, start_live_server, wait_ready
from tests.support.fakes import CPU_DESCRIPTION, FakeEngine


def test_ready_lists_each_worker_with_its_gpu_device_and_levels(tmp_path):
    description = {**CPU_DESCRIPTION, "device": "cuda:0 NVIDIA H200",
                   "dropped": {"high": {"fp8": "failed warming up"}}}  # fmt: skip
    settings = dataclasses.replace(make_settings(tmp_path), gpu="2")
    server = start_live_server(settings, FakeEngine(description=description))
    try:
        with server.client() as http:
            wait_ready(http)
            r = http.get("/ready")
    finally:
        server.stop()
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["workers"] == {"test-worker": "ready"}
    assert body["worker_details"] == {"test-worker": {"state": "ready", "gpu": "2", **description}}


def test_a_worker_that_says_nothing_of_what_it_runs_is_listed_with_empty_details(fake_server):
    fake_server.store.report_worker("old-worker", "warming", 15.0, {"images": 0})  # from before worker info
    with fake_server.client() as http:
        wait_ready(http)
        body = http.get("/ready").json()
    assert body["workers"] == {"old-worker": "warming", "test-worker": "ready"}
    empty = {"gpu": None, "device": None, "levels": {}, "skipped": {}}
    assert body["worker_details"]["old-worker"] == {"state": "warming", **empty}
    assert body["worker_details"]["test-worker"]["device"] == "cpu"
