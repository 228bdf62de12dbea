"""fal's queue protocol over HTTP (fake engine): submit, status + logs, stream, result, cancel, limits."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.waits import wait_status

SUBMIT = "/queue/fal-ai/flux/schnell"
BODY = {"prompt": "a cat", "image_size": "square", "seed": 1}


def submit(http, body=BODY, **kwargs):
    r = http.post(SUBMIT, json=body, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_submit_answers_with_every_field_and_absolute_urls(fake_server):
    with fake_server.client() as http:
        r = http.post(SUBMIT, json=BODY)
        handle = r.json()
    assert r.headers["x-fal-request-id"] == handle["request_id"]
    assert handle["status"] == "IN_QUEUE" and isinstance(handle["queue_position"], int)
    assert handle["gateway_request_id"]
    base = f"{fake_server.url}/queue/fal-ai/flux/requests/{handle['request_id']}"
    assert handle["response_url"] == base
    assert handle["status_url"] == base + "/status"
    assert handle["cancel_url"] == base + "/cancel"


def test_status_result_and_logs(fake_server):
    with fake_server.client() as http:
        handle = submit(http)
        done = wait_status(http, handle, logs="1")
        assert done["metrics"]["inference_time"] is not None
        messages = [line["message"] for line in done["logs"]]
        assert messages[:1] == ["denoise"] and "step 4/4" in messages and messages[-1] == "store"
        assert all(line["timestamp"] and line["level"] == "INFO" and line["source"] == "USER" for line in done["logs"])
        r = http.get(handle["status_url"], params={"logs": "false"})
        assert r.status_code == 200 and r.json()["logs"] is None and "error" not in r.json()
        result = http.get(handle["response_url"])
        assert result.status_code == 200 and result.json()["seed"] == 1
        assert result.headers["x-fal-request-id"] == handle["request_id"]


def test_queue_positions_count_the_jobs_ahead(fake_server, fake_engine):
    fake_engine.gate.clear()
    with fake_server.client() as http:
        handles = [submit(http) for _ in range(4)]
        running = wait_status(http, handles[0], "IN_PROGRESS", logs="1")
        assert running["logs"] is not None and "queue_position" not in running
        queued = [http.get(h["status_url"]) for h in handles[1:]]
        assert [r.status_code for r in queued] == [202] * 3
        assert [r.json()["queue_position"] for r in queued] == [0, 1, 2]
        assert all(r.json()["logs"] is None for r in queued)
        fake_engine.gate.set()
        for h in handles:
            wait_status(http, h)


def test_full_app_id_addresses_work_too(fake_server):
    with fake_server.client() as http:
        handle = submit(http)
        rid = handle["request_id"]
        wait_status(http, handle)
        assert http.get(f"/queue/fal-ai/flux/schnell/requests/{rid}/status").json()["status"] == "COMPLETED"
        assert http.get(f"/queue/fal-ai/flux/schnell/requests/{rid}").status_code == 200


def test_unknown_requests(fake_server):
    with fake_server.client() as http:
        for path in ("/status", "/status/stream", ""):
            assert http.get(f"/queue/fal-ai/flux/requests/nope{path}").status_code == 404
        r = http.put("/queue/fal-ai/flux/requests/nope/cancel")
        assert r.status_code == 404 and r.json() == {"status": "NOT_FOUND"}


def test_result_before_completion(fake_server, fake_engine):
    fake_engine.gate.clear()
    with fake_server.client() as http:
        handle = submit(http)
        r = http.get(handle["response_url"])
        assert r.status_code == 400 and r.json()["detail"] == "Request is still in progress"
        fake_engine.gate.set()


def test_a_failed_job_is_completed_with_its_error(fake_server):
    with fake_server.client() as http:
        handle = submit(http, {"prompt": "explode"})
        done = wait_status(http, handle)
        assert done["error_type"] == "internal_error" and "forced failure" in done["error"]
        r = http.get(handle["response_url"])
        assert r.status_code == 500 and r.json()["error_type"] == "internal_error"


def test_bad_input_is_refused_at_submit(fake_server, fake_engine):
    with fake_server.client() as http:
        r = http.post(SUBMIT, json={"prompt": "x", "num_images": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "num_images"]
        r = http.post(SUBMIT, json=BODY, params={"fal_webhook": "ftp://x"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
        r = http.post(SUBMIT, json=BODY, headers={"x-fal-request-timeout": "soon"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", "x-fal-request-timeout"]
    assert fake_engine.calls == []


def test_cancel_a_queued_job(fake_server, fake_engine):
    fake_engine.gate.clear()
    with fake_server.client() as http:
        first, second = submit(http), submit(http)
        r = http.put(second["cancel_url"])
        assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
        done = http.get(second["status_url"]).json()
        assert done["status"] == "COMPLETED" and done["error_type"] == "client_cancelled"
        assert http.get(second["response_url"]).status_code == 499
        again = http.put(second["cancel_url"])
        assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
        fake_engine.gate.set()
        wait_status(http, first)
    assert len(fake_engine.calls) == 1, "a cancelled queued job never reaches the engine"


def test_cancel_a_running_job_stops_it_between_steps(tmp_path):
    engine = FakeEngine(step_s=0.05)
    server = start_live_server(make_settings(tmp_path), engine)
    try:
        with server.client() as http:
            handle = submit(http, {**BODY, "num_inference_steps": 12})
            wait_status(http, handle, "IN_PROGRESS")
            time.sleep(0.12)
            assert http.put(handle["cancel_url"]).status_code == 202
            done = http.get(handle["status_url"], params={"logs": "1"}).json()
            assert done["status"] == "COMPLETED" and done["error_type"] == "client_cancelled"
            time.sleep(0.3)
            steps = [m["message"] for m in http.get(handle["status_url"], params={"logs": "1"}).json()["logs"]
                     if m["message"].startswith("step")]  # fmt: skip
            assert 0 < len(steps) < 12, steps
            assert "store" not in [m["message"] for m in done["logs"]]
            nxt = submit(http)
            assert wait_status(http, nxt)["status"] == "COMPLETED" and "error" not in wait_status(http, nxt)
    finally:
        server.stop()
    assert len(list((tmp_path / "files").iterdir())) == 1, "only the next job stored an image"


def test_cancel_called_again_and_again_at_random_moments(tmp_path):
    """No job ends in two states; the worker never carries a cancel into the next job."""
    engine = FakeEngine(step_s=0.004)
    server = start_live_server(make_settings(tmp_path), engine)
    rng = random.Random(7)
    try:
        with server.client() as http:
            handles = [submit(http, {**BODY, "num_inference_steps": rng.randint(1, 6)}) for _ in range(10)]
            answers: list[int] = []

            def hammer(handle):
                time.sleep(rng.random() * 0.3)
                with server.client() as own:
                    for _ in range(10):
                        answers.append(own.put(handle["cancel_url"]).status_code)
                        time.sleep(rng.random() * 0.01)

            threads = [threading.Thread(target=hammer, args=(h,)) for h in handles]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(answers) == 100 and set(answers) <= {202, 400}
            ends = [wait_status(http, h) for h in handles]
            for h, end in zip(handles, ends):
                job = server.store.get(h["request_id"])
                assert job.status.terminal
                if job.status.value == "cancelled":
                    assert end["error_type"] == "client_cancelled" and job.output is None
                else:
                    assert job.status.value == "completed" and "error" not in end and job.output
            # Exactly one 202 per job that ended cancelled.
            assert answers.count(202) == sum(1 for e in ends if e.get("error_type") == "client_cancelled")
            after = submit(http)
            assert "error" not in wait_status(http, after)
    finally:
        server.stop()


def test_status_stream(fake_server, fake_engine):
    fake_engine.step_s = 0.05
    fake_engine.gate.clear()
    with fake_server.client() as http:
        blocker, handle = submit(http), submit(http)
        threading.Timer(0.3, fake_engine.gate.set).start()
        events = []
        with http.stream("GET", handle["status_url"] + "/stream", params={"logs": "1"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    statuses = [e["status"] for e in events]
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
    assert all("logs" in e for e in events)
    messages = [line["message"] for e in events for line in (e["logs"] or [])]
    assert any(m.startswith("step") for m in messages)
    assert len(messages) == len(set(messages)), "each event carries only the new log lines"
    assert blocker


def test_status_stream_keep_alive(tmp_path):
    engine = FakeEngine()
    engine.gate.clear()
    server = start_live_server(make_settings(tmp_path, waiting={"keepalive_s": 0.1}), engine)
    try:
        with server.client() as http:
            handle = submit(http)
            threading.Timer(0.5, engine.gate.set).start()
            with http.stream("GET", handle["status_url"] + "/stream") as r:
                lines = list(r.iter_lines())
        assert any(line.startswith(":") for line in lines)
        assert json.loads([x for x in lines if x.startswith("data: ")][-1][6:])["status"] == "COMPLETED"
    finally:
        engine.gate.set()
        server.stop()


def test_queue_full_answers_429(tmp_path):
    engine = FakeEngine()
    engine.gate.clear()
    server = start_live_server(make_settings(tmp_path, admission={"max_queue_length": 2}), engine)
    try:
        with server.client() as http:
            submit(http)  # running
            time.sleep(0.1)
            submit(http), submit(http)
            r = http.post(SUBMIT, json=BODY)
            assert r.status_code == 429 and r.json()["error_type"] == "queue_full"
            assert http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": 1}).status_code == 429
    finally:
        engine.gate.set()
        server.stop()


def test_start_deadline_fails_a_job_not_started_in_time(fake_server, fake_engine):
    fake_engine.gate.clear()
    with fake_server.client() as http:
        blocker = submit(http)
        late = submit(http, headers={"x-fal-request-timeout": "0.3"})
        time.sleep(1.6)  # the API's upkeep expires deadlines every second
        done = http.get(late["status_url"]).json()
        assert done["status"] == "COMPLETED" and done["error_type"] == "request_timeout"
        r = http.get(late["response_url"])
        assert r.status_code == 504 and r.headers["x-fal-request-timeout-type"] == "user"
        fake_engine.gate.set()
        wait_status(http, blocker)
    assert len(fake_engine.calls) == 1


def test_sync_run_start_deadline(fake_server, fake_engine):
    fake_engine.gate.clear()
    with fake_server.client() as http:
        submit(http)
        threading.Timer(1.5, fake_engine.gate.set).start()
        r = http.post("/fal-ai/flux/schnell", json=BODY, headers={"x-fal-request-start-timeout": "0.2"})
    assert r.status_code == 504 and r.json()["error_type"] == "request_timeout"


def test_sync_mode_results_are_handed_out_once(fake_server):
    with fake_server.client() as http:
        handle = submit(http, {**BODY, "sync_mode": True})
        wait_status(http, handle)
        first = http.get(handle["response_url"])
        assert first.status_code == 200 and first.json()["images"][0]["url"].startswith("data:image/jpeg")
        assert http.get(handle["response_url"]).status_code == 410
        run = http.post("/fal-ai/flux/schnell", json={**BODY, "sync_mode": True})
        rid = run.headers["x-fal-request-id"]
        assert http.get(f"/queue/fal-ai/flux/requests/{rid}").status_code == 410


@pytest.mark.parametrize("logs", ["1", "true"])
def test_logs_flag_spellings(fake_server, logs):
    with fake_server.client() as http:
        handle = submit(http)
        assert isinstance(wait_status(http, handle, logs=logs)["logs"], list)
