"""Cross-request batching in the worker (fake engine): who is batched with whom, and cancel inside a batch."""

from __future__ import annotations

import time

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

SUBMIT = "/queue/fal-ai/flux/schnell"


def run_queue(server, engine, bodies):
    """Hold the worker on a blocker, queue `bodies`, release, and wait for all of them."""
    engine.gate.clear()
    with server.client() as http:
        blocker = http.post(SUBMIT, json={"prompt": "blocker", "acceleration": "none"}).json()
        deadline = time.monotonic() + 5
        while http.get(blocker["status_url"]).json()["status"] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        handles = [http.post(SUBMIT, json=body).json() for body in bodies]
        engine.gate.set()
        results = []
        for h in [blocker, *handles]:
            while (r := http.get(h["response_url"])).status_code == 400:
                time.sleep(0.01)
            results.append(r)
    return results[1:]


def test_compatible_jobs_run_as_one_batch(fake_server, fake_engine):
    bodies = [{"prompt": f"p{i}", "acceleration": "regular", "seed": i, "image_size": "square"} for i in range(4)]
    results = run_queue(fake_server, fake_engine, bodies)
    assert [r.json()["seed"] for r in results] == [0, 1, 2, 3]
    assert fake_engine.batches == [1, 4]


def test_incompatible_jobs_and_the_exact_level_run_alone(fake_server, fake_engine):
    bodies = [
        {"prompt": "a", "acceleration": "regular", "image_size": "square"},
        {"prompt": "b", "acceleration": "regular", "image_size": "portrait_4_3"},
        {"prompt": "c", "acceleration": "high", "image_size": "square"},
        {"prompt": "d", "acceleration": "none", "image_size": "square"},
        {"prompt": "e", "acceleration": "none", "image_size": "square"},
        {"prompt": "f", "acceleration": "regular", "image_size": "square", "num_inference_steps": 2},
    ]
    results = run_queue(fake_server, fake_engine, bodies)
    assert all(r.status_code == 200 for r in results)
    assert fake_engine.batches == [1] * 7


def test_batch_size_is_capped(tmp_path):
    engine = FakeEngine()
    server = start_live_server(make_settings(tmp_path), engine)
    server.worker.config.max_batch = 2
    try:
        bodies = [{"prompt": f"p{i}", "acceleration": "high", "image_size": "square"} for i in range(5)]
        run_queue(server, engine, bodies)
    finally:
        server.stop()
    assert engine.batches == [1, 2, 2, 1]


def test_a_job_cancelled_inside_a_batch_ends_cancelled_and_the_rest_complete(tmp_path):
    engine = FakeEngine(step_s=0.05)
    server = start_live_server(make_settings(tmp_path), engine)
    try:
        engine.gate.clear()
        with server.client() as http:
            blocker = http.post(SUBMIT, json={"prompt": "blocker"}).json()
            body = {"acceleration": "regular", "image_size": "square", "num_inference_steps": 12}
            handles = [http.post(SUBMIT, json={**body, "prompt": f"p{i}"}).json() for i in range(3)]
            engine.gate.set()
            while http.get(handles[0]["status_url"]).json()["status"] != "IN_PROGRESS":
                time.sleep(0.01)
            time.sleep(0.1)
            assert http.put(handles[1]["cancel_url"]).status_code == 202
            ends = []
            for h in handles:
                while (s := http.get(h["status_url"]).json())["status"] != "COMPLETED":
                    time.sleep(0.01)
                ends.append(s)
            time.sleep(0.3)
            files = sorted(p.name for p in (tmp_path / "files").iterdir())
            outputs = [http.get(h["response_url"]) for h in handles]
        assert blocker
    finally:
        server.stop()
    assert [e.get("error_type") for e in ends] == [None, "client_cancelled", None]
    assert engine.batches[-1] == 3
    assert [o.status_code for o in outputs] == [200, 499, 200]
    kept = {o.json()["images"][0]["url"].rsplit("/", 1)[1] for o in outputs if o.status_code == 200}
    assert kept <= set(files) and len(files) == 3, "the blocker's and the two completed jobs' images only"
