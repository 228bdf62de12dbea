"""The lean routes (api/lean_route.py): status polls, queue submits and sync runs are served without FastAPI's
dependency solving, and answer exactly what FastAPI's own handler answers for the same request, refusals
included."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest

from fluxserve.api import lean_submit
from fluxserve.core.accounts import new_key
from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.waits import wait_status

SUBMIT = "/queue/fal-ai/flux/schnell"
RUN = "/fal-ai/flux/schnell"
JSON = {"content-type": "application/json"}
VALID_HEADERS = {
    "x-fal-request-timeout": "30", "x-fal-request-start-timeout": "2.5", "x-fal-queue-priority": "LOW",
    "x-fal-no-retry": "1", "x-fal-store-io": "0",
    "x-fal-object-lifecycle-preference": '{"expiration_duration_seconds": 600}',
}  # fmt: skip

# (name, query, headers, body bytes, who answers, status): what a client may send a route that creates a job.
# Who answers: "lean", the adapter (also when a dependency or the endpoint refuses: the same code either way);
# "fastapi", FastAPI's handler (not plain); "edge", the body limits, before any route.
LEAN, FASTAPI, EDGE = "lean", "fastapi", "edge"
A = b'{"prompt": "a"}'
HUGE = b'{"prompt": "a", "image_size": {"width": 14142, "height": 14142}}'
CASES = [
    ("plain", {}, JSON, A, LEAN, 200),
    ("every fal header", {}, {**JSON, **VALID_HEADERS}, b'{"prompt": "a", "seed": 7}', LEAN, 200),
    ("charset and +json", {}, {"content-type": "application/vnd.x+json; charset=utf-8"}, A, LEAN, 200),
    ("queue cap", {"fal_max_queue_length": "1000"}, JSON, A, LEAN, 200),
    ("queue cap with zeros", {"fal_max_queue_length": "0099"}, JSON, A, LEAN, 200),
    ("webhook", {"fal_webhook": "http://127.0.0.1:9/hook"}, JSON, A, LEAN, 200),
    ("queue cap signed", {"fal_max_queue_length": "+900"}, JSON, A, FASTAPI, 200),
    ("over the pixel cap", {}, JSON, HUGE, LEAN, 422),
    ("lifecycle not JSON", {}, {**JSON, "x-fal-object-lifecycle-preference": "soon"}, A, LEAN, 422),
    ("lifecycle negative", {}, {**JSON, "x-fal-object-lifecycle-preference": '{"expiration_duration_seconds": -1}'},
     A, LEAN, 422),
    ("bad JSON", {}, JSON, b'{"prompt": ', EDGE, 422),
    ("no content type", {}, {}, A, FASTAPI, 422),
    ("text/plain", {}, {"content-type": "text/plain"}, A, FASTAPI, 422),
    ("empty body", {}, JSON, b"", FASTAPI, 422),
    ("array body", {}, JSON, b"[]", FASTAPI, 422),
    ("wrong type", {}, JSON, b'{"prompt": 5}', FASTAPI, 422),
    ("unknown size", {}, JSON, b'{"prompt": "a", "image_size": "huge"}', FASTAPI, 422),
    ("too many steps", {}, JSON, b'{"prompt": "a", "num_inference_steps": 99}', FASTAPI, 422),
    ("timeout not a number", {}, {**JSON, "x-fal-request-timeout": "soon"}, A, FASTAPI, 422),
    ("timeout zero", {}, {**JSON, "x-fal-request-start-timeout": "0"}, A, FASTAPI, 422),
    ("timeout empty", {}, {**JSON, "x-fal-request-timeout": ""}, A, FASTAPI, 422),
    ("queue cap negative", {"fal_max_queue_length": "-1"}, JSON, A, FASTAPI, 422),
    ("queue cap spelled", {"fal_max_queue_length": "ten"}, JSON, A, FASTAPI, 422),
    ("webhook not http", {"fal_webhook": "ftp://127.0.0.1/x"}, JSON, A, FASTAPI, 422),
]  # fmt: skip
# The sync route declares no fal_webhook: it ignores one, as FastAPI does any query it does not declare.
ON_THE_SYNC_ROUTE = {"webhook not http": (LEAN, 200)}


def count_solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI solves dependencies for from now on (the live server runs in this process)."""
    solved: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return solved


def comparable(response: Any) -> tuple[int, Any]:
    """What must be the same either way: the status and the body, less what differs per job."""
    body = response.json()
    if response.status_code < 300 and isinstance(body, dict):
        if "request_id" in body:  # a queue submit's handle
            body = {key: type(value).__name__ for key, value in body.items()}
        else:  # a sync run's result: its images and timings are the job's own
            body = sorted(body)
    return response.status_code, body


@pytest.mark.parametrize("path", [SUBMIT, RUN], ids=["queue submit", "sync run"])
def test_lean_routes_answer_what_fastapi_answers(fake_server, monkeypatch, path):
    solved = count_solved(monkeypatch)
    with fake_server.client() as http:
        answers = []
        for name, query, headers, body, served, status in CASES:
            served, status = ON_THE_SYNC_ROUTE.get(name, (served, status)) if path == RUN else (served, status)
            solved.clear()
            response = http.post(path, params=query, headers=headers, content=body)
            assert response.status_code == status, (name, response.text)
            assert bool(solved) == (served == FASTAPI), (name, solved)
            answers.append(comparable(response))
        monkeypatch.setattr(lean_submit, "plain_submission", none_solved)
        for (name, query, headers, body, *_), expected in zip(CASES, answers):
            response = http.post(path, params=query, headers=headers, content=body)
            assert comparable(response) == expected, name


async def none_solved(*args: Any, **kwargs: Any) -> None:
    """plain_submission refusing everything: each request goes to FastAPI's own handler."""
    return None


def test_a_lean_submit_is_the_job_fastapi_would_have_submitted(fake_server, fake_engine):
    """Every parameter read by hand reaches the job: priority, timeouts, options, lifetime, seed."""
    fake_engine.gate.clear()  # held: the job stays queued while its record is read
    try:
        with fake_server.client() as http:
            handle = http.post(SUBMIT, headers={**JSON, **VALID_HEADERS}, content=b'{"prompt": "a", "seed": 7}')
            job = fake_server.store.get(handle.json()["request_id"])
    finally:
        fake_engine.gate.set()
    assert job.priority.value == "low" and job.spec.seed == 7 and job.spec.prompt == "a"
    assert job.options.no_retry and not job.options.store_io
    assert job.start_deadline == pytest.approx(job.created_at + 2.5)  # the newer header wins
    assert job.spec.output_ttl_s == 600


def test_status_polls_are_served_without_fastapis_dependency_solving(fake_server, monkeypatch):
    """At either prefix, with or without logs, for a known or unknown id; the result route still is solved."""
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "lean"}).json()
        wait_status(http, handle, "COMPLETED")
        solved = count_solved(monkeypatch)
        full = handle["status_url"].replace("/fal-ai/flux/", "/fal-ai/flux/schnell/")
        for url, params in ((handle["status_url"], {"logs": "1"}), (handle["status_url"], {}), (full, {})):
            body = http.get(url, params=params).json()
            assert body["status"] == "COMPLETED" and body["request_id"] == handle["request_id"], body
            assert (body["logs"] is None) == (not params), body
        assert http.get(handle["status_url"].replace(handle["request_id"], "nope")).status_code == 404
        assert solved == []
        assert http.get(handle["response_url"]).status_code == 200
        assert solved == [handle["response_url"].removeprefix(fake_server.url)]


def test_the_lean_routes_keep_the_openapi_document(fake_server):
    """They are documented from their endpoints' signatures, as before: every parameter FastAPI would read."""
    with fake_server.client() as http:
        spec = http.get("/openapi.json").json()
    submit = spec["paths"][SUBMIT]["post"]
    names = {p["name"] for p in submit["parameters"]}
    assert {"fal_webhook", "fal_max_queue_length", "x-fal-request-timeout", "x-fal-queue-priority",
            "x-fal-object-lifecycle-preference", "x-fal-no-retry", "x-fal-store-io"} <= names, names  # fmt: skip
    assert "requestBody" in submit and "requestBody" in spec["paths"][RUN]["post"]
    status = spec["paths"]["/queue/fal-ai/flux/requests/{request_id}/status"]["get"]
    assert {p["name"] for p in status["parameters"]} >= {"request_id", "logs"}


def test_keys_and_rate_limits_are_the_same_on_the_lean_routes(tmp_path, monkeypatch):
    """With auth on: each credential gets the same answer either way, and a submit spends the key's token."""
    server = start_live_server(make_settings(tmp_path, auth=True, submit_rate=0.001, submit_burst=2), FakeEngine())
    try:
        key, credential = new_key("team")
        server.store.create_key(key)
        credentials = [None, "Key nope", "Key fxs_nope:secret", "Key 6f1c3d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f:ab",
                       "Bearer a.b.c", f"Key {credential}"]  # fmt: skip
        with server.client() as http:
            def answers() -> list[tuple[int, Any]]:
                got = []
                for value in credentials:
                    headers = {**JSON, **({"authorization": value} if value else {})}
                    got.append(comparable(http.post(SUBMIT, headers=headers, content=A)))
                return got

            lean = answers()
            monkeypatch.setattr(lean_submit, "plain_submission", none_solved)
            assert answers() == lean
        assert [status for status, _ in lean] == [401] * 5 + [200]
        # The burst of 2: one token spent on each path, the third submit is refused.
        with server.client() as http:
            third = http.post(SUBMIT, headers={**JSON, "authorization": f"Key {credential}"}, content=A)
        assert third.status_code == 429, third.text
    finally:
        server.stop()
