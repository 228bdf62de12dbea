"""A status poll costs the store one read: the job, its queue position and its logs come from one status_view
call (made on the event loop: status_view_async), for a queued, a running and a finished job, on the plain and the SSE status."""

from __future__ import annotations

from typing import Any

from tests.support.waits import wait_status

SUBMIT = "/queue/fal-ai/flux/schnell"
# The store's reads a status could be made of.
JOB_READS = ("get", "queue_position", "logs", "status_view", "status_view_async")


def record_job_reads(store: Any) -> list[str]:
    """The names of the job reads made on `store` from now on (the API's store; the worker has its own)."""
    calls: list[str] = []
    for name in JOB_READS:
        def recorded(*args: Any, _read: Any = getattr(store, name), _name: str = name) -> Any:
            # status_view_async may be made of status_view (SQLite reads in place): count the outer call only.
            if not (calls and calls[-1] == "status_view_async" and _name == "status_view"):
                calls.append(_name)
            return _read(*args)

        setattr(store, name, recorded)
    return calls


def test_each_status_read_is_one_store_call_with_position_and_logs(fake_server, fake_engine):
    fake_engine.gate.clear()  # the first job holds at its first step: the second waits in the queue behind it
    try:
        with fake_server.client() as http:
            running = http.post(SUBMIT, json={"prompt": "held", "image_size": "square"}).json()
            queued = http.post(SUBMIT, json={"prompt": "behind", "image_size": "landscape_4_3"}).json()
            wait_status(http, running, "IN_PROGRESS")
            calls = record_job_reads(fake_server.store)
            body = http.get(queued["status_url"], params={"logs": "1"}).json()
            assert body["status"] == "IN_QUEUE" and body["queue_position"] == 0 and body["logs"] == []
            assert calls == ["status_view_async"]
            calls.clear()
            body = http.get(running["status_url"], params={"logs": "1"}).json()
            # A list (the stage lines so far ride with the first step's write), not None: logs were asked for.
            assert body["status"] == "IN_PROGRESS" and isinstance(body["logs"], list), body
            assert http.get(running["status_url"]).json()["logs"] is None
            assert calls == ["status_view_async", "status_view_async"]
            fake_engine.gate.set()
            wait_status(http, queued, "COMPLETED")
            calls.clear()
            with http.stream("GET", queued["status_url"] + "/stream", params={"logs": "1"}) as events:
                lines = [line for line in events.iter_lines() if line.startswith("data:")]
            assert len(lines) == 1 and '"COMPLETED"' in lines[0]
            # The stream's visibility check before it starts (a job read, on the loop too), then one read per event.
            assert calls == ["status_view_async", "status_view_async"]
    finally:
        fake_engine.gate.set()

