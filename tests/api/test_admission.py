"""Admission through a live server: the queue cap holds under racing submits, for the queue and the sync
endpoint; one key's share of the queue leaves room for the others; fal_max_queue_length as fal defines it; a
sync request whose client hangs up cancels its job (queued: never rendered; running: stopped between steps,
nothing billed)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from fluxserve.core.accounts import new_key
from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.abuse

RUN = "/fal-ai/flux/schnell"
SUBMIT = "/queue/fal-ai/flux/schnell"
BODY = {"prompt": "a cat", "image_size": "square", "seed": 1}


@pytest.fixture
def held():
    """A FakeEngine whose gate is closed: the first job runs and holds the worker at its first step."""
    engine = FakeEngine()
    engine.gate.clear()
    yield engine
    engine.gate.set()


def serve(tmp_path, engine, **admission):
    return start_live_server(make_settings(tmp_path, admission=admission), engine)


def until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def start_blocker(http, engine):
    """A queued job that the worker takes and holds at the gate: every later job waits in the queue."""
    r = http.post(SUBMIT, json={**BODY, "prompt": "blocker"})
    assert r.status_code == 200, r.text
    until(lambda: len(engine.calls) == 1, what="the blocker to start")
    return r.json()


def wait_completed(http, handle, timeout=20.0):
    until(lambda: http.get(handle["status_url"]).json()["status"] == "COMPLETED", timeout, "the job to end")


def test_racing_submits_over_http_admit_exactly_the_cap(tmp_path, held):
    server = serve(tmp_path, held, max_queue_length=10)
    try:
        with server.client() as http:
            start_blocker(http, held)
        barrier = threading.Barrier(60)
        codes: list[int] = []

        def one():
            with httpx.Client(base_url=server.url, timeout=30) as http:
                barrier.wait()
                codes.append(http.post(SUBMIT, json=BODY).status_code)

        threads = [threading.Thread(target=one) for _ in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(set(codes)) == [200, 429] and codes.count(200) == 10, codes
        assert server.store.count_queued() == 10
    finally:
        held.gate.set()
        server.stop()


def test_the_sync_endpoint_obeys_the_queue_cap_at_once(tmp_path, held):
    server = serve(tmp_path, held, max_queue_length=1)
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            start_blocker(http, held)
            assert http.post(SUBMIT, json=BODY).status_code == 200  # the one place in the queue
            started = time.monotonic()
            r = http.post(RUN, json=BODY)
            assert r.status_code == 429 and r.json()["error_type"] == "queue_full", r.text
            assert time.monotonic() - started < 1, "refused before it waits for anything"
            assert http.post(RUN, json=BODY, params={"fal_max_queue_length": 5}).status_code == 429, \
                "a client's fal_max_queue_length cannot raise the operator's cap"  # fmt: skip
            assert server.store.count_queued() == 1, "a refused request stores nothing"
    finally:
        held.gate.set()
        server.stop()


def test_fal_max_queue_length_rejects_only_when_more_than_n_are_waiting(tmp_path, held):
    server = serve(tmp_path, held)
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            start_blocker(http, held)
            # Nothing waits (the blocker runs): N = 0 admits.
            assert http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": 0}).status_code == 200
            # One waits now: 0 refuses, and says why; 1 still admits ("more than 1" are not waiting yet).
            refused = http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": 0})
            assert refused.status_code == 429 and refused.json()["error_type"] == "queue_full"
            assert "fal_max_queue_length=0" in refused.json()["detail"]
            assert http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": 1}).status_code == 200
            assert http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": 1}).status_code == 429
            assert http.post(RUN, json=BODY, params={"fal_max_queue_length": 1}).status_code == 429
            bad = http.post(SUBMIT, json=BODY, params={"fal_max_queue_length": -1})
            assert bad.status_code == 422
            assert bad.json()["detail"][0]["loc"] == ["query", "fal_max_queue_length"]
            assert server.store.count_queued() == 2
    finally:
        held.gate.set()
        server.stop()


def test_one_keys_flood_leaves_room_for_another_key(tmp_path, held):
    server = start_live_server(make_settings(tmp_path, auth=True, admission={"max_queued_per_key": 3}), held)
    headers = {}
    for name in ("flood", "other"):
        key, credential = new_key(name)
        server.store.create_key(key)
        headers[name] = {"authorization": f"Key {credential}"}
    try:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            codes = [http.post(SUBMIT, json=BODY, headers=headers["flood"]).status_code for _ in range(6)]
            until(lambda: len(held.calls) == 1, what="the first job to start")
            assert codes == [200] * 4 + [429] * 2, "one running, three waiting: the share counts waiting jobs"
            refused = http.post(SUBMIT, json=BODY, headers=headers["flood"])
            assert refused.status_code == 429 and "per-key share" in refused.json()["detail"]
            assert http.post(RUN, json=BODY, headers=headers["flood"]).status_code == 429
            assert http.post(SUBMIT, json=BODY, headers=headers["other"]).status_code == 200
    finally:
        held.gate.set()
        server.stop()


def abandon_sync_request(server, prompt, seconds):
    """fal's clients on a timeout: send a sync request, give up after `seconds` and close the connection."""
    with httpx.Client(base_url=server.url, timeout=seconds) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(RUN, json={**BODY, "prompt": prompt})


def billed_requests(http):
    return sum(row["requests"] for row in http.get("/usage").json()["usage"])


def test_a_queued_sync_job_whose_client_hangs_up_is_never_rendered(tmp_path, held):
    server = serve(tmp_path, held)
    try:
        with server.client() as http:
            blocker = start_blocker(http, held)
            abandon_sync_request(server, "abandoned", 0.5)
            until(lambda: server.store.count_queued() == 0, 3, "the abandoned job to leave the queue")
            held.gate.set()
            wait_completed(http, blocker)
            after = http.post(SUBMIT, json={**BODY, "prompt": "after"}).json()
            wait_completed(http, after)  # the worker is past the point where it would have taken it
            assert billed_requests(http) == 2
    finally:
        held.gate.set()
        server.stop()
    assert [spec.prompt for spec in held.calls] == ["blocker", "after"]


def test_a_running_sync_job_whose_client_hangs_up_stops_between_steps(tmp_path, held):
    server = serve(tmp_path, held)
    try:
        with server.client() as http:
            waiter = threading.Thread(target=abandon_sync_request, args=(server, "abandoned", 1.0))
            waiter.start()
            until(lambda: len(held.calls) == 1, what="the sync job to start")  # held before its first step
            waiter.join()
            time.sleep(0.5)  # the API notices the hang-up and cancels; then the worker may take its next step
            held.gate.set()
            after = http.post(SUBMIT, json={**BODY, "prompt": "after"}).json()
            wait_completed(http, after)
            assert http.get(after["response_url"]).status_code == 200
            assert billed_requests(http) == 1, "the abandoned job was not billed"
    finally:
        held.gate.set()
        server.stop()
    assert len(list((tmp_path / "files").iterdir())) == 1, "only the next job stored an image"


def test_the_per_key_share_is_an_operator_flag_with_its_default_from_admission_settings(tmp_path):
    from fluxserve.cli.main import build_parser, settings_from_args
    from fluxserve.core.settings import AdmissionSettings

    def queue(argv, env=None):
        args = build_parser(env or {}).parse_args(["serve", "--data-dir", str(tmp_path), *argv])
        return settings_from_args(args).admission

    assert queue([]).max_queued_per_key == AdmissionSettings().max_queued_per_key == 1_000
    assert queue(["--max-queued-per-key", "7"]).max_queued_per_key == 7
    assert queue([], {"FLUXSERVE_MAX_QUEUED_PER_KEY": "0"}).max_queued_per_key == 0
