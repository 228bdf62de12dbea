"""The SQLite store under a foreign lock: another process holding the write lock (a backup, the sqlite3 shell)
must not stall reads, and must cost a worker at most the one operation that outlasted the retry budget.

The lock is taken by a real second process; short, injected busy timeouts stand in for the 30 s default."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fluxserve.core.errors import StoreBusy
from fluxserve.core.jobs import Job, JobStatus, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from tests.conftest import make_settings, start_live_server, wait_ready
from tests.support.claiming import claim_one
from tests.support.fakes import FakeEngine
from tests.support.specs import SPEC

pytestmark = pytest.mark.abuse

HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE jobs SET app = app WHERE 0")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@contextmanager
def foreign_write_lock(path: Path, hold_s: float) -> Iterator[subprocess.Popen]:
    """Another process holds the database's write lock for hold_s (from when this yields)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(hold_s)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.wait(timeout=hold_s + 10)


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_reads_answer_while_another_process_holds_the_write_lock(tmp_path):
    server = start_live_server(make_settings(tmp_path), FakeEngine())
    try:
        with server.client() as http:
            wait_ready(http)
            handle = http.post("/queue/fal-ai/flux/schnell", json={"prompt": "x", "image_size": "square"}).json()
            deadline = time.monotonic() + 10
            while http.get(handle["status_url"]).json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with foreign_write_lock(tmp_path / "jobs.sqlite3", hold_s=3):
                time.sleep(0.3)  # the worker's claim and the webhook dispatcher are now waiting on the lock
                slowest = max(
                    timed(lambda: http.get(handle["status_url"], params={"logs": 1}).raise_for_status()),
                    timed(lambda: http.get(handle["response_url"]).raise_for_status()),
                    timed(lambda: http.get("/ready").raise_for_status()),
                    timed(lambda: http.get("/metrics").raise_for_status()),
                )
                assert slowest < 0.5, f"a read waited {slowest:.1f} s behind the foreign lock"
            # The worker waited the lock out, and works.
            done = http.post("/queue/fal-ai/flux/schnell", json={"prompt": "y", "image_size": "square"})
            deadline = time.monotonic() + 10
            while http.get(done.json()["status_url"]).json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert server.threads[1].is_alive()
    finally:
        server.stop()


def submit(store: SQLiteJobStore) -> Job:
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC)
    store.submit(job)
    return job


def test_a_lock_longer_than_the_busy_timeout_is_waited_out(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore.open(path, busy_timeout_s=0.05, retry_budget_s=10)
    job = submit(store)
    with foreign_write_lock(path, hold_s=1.0):
        claimed = claim_one(store, "w", lease_s=30)  # 20 busy timeouts' worth of lock
    assert claimed is not None and claimed.id == job.id
    store.close()


def test_a_lock_past_the_budget_fails_that_one_operation_and_reads_go_on(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore.open(path, busy_timeout_s=0.05, retry_budget_s=0.4)
    job = submit(store)
    with foreign_write_lock(path, hold_s=2.5):
        started = time.monotonic()
        with pytest.raises(StoreBusy):
            claim_one(store, "w", lease_s=30)
        assert time.monotonic() - started < 1.5, "gave up after its budget, not SQLite's 30 s"
        assert timed(lambda: store.get(job.id)) < 0.2 and store.count_queued() == 1
    assert claim_one(store, "w", lease_s=30).id == job.id, "the store works again once the lock is gone"
    store.close()


def test_a_worker_outlives_a_lock_past_its_budget(tmp_path):
    """The operation that ran out of budget fails; the worker (and its loaded model) does not."""
    from fluxserve.blobs.open import open_blobs
    from fluxserve.worker.loop import Worker, WorkerConfig

    settings = make_settings(tmp_path)
    path = settings.store.db_path
    store = SQLiteJobStore.open(path, busy_timeout_s=0.05, retry_budget_s=0.3)
    config = WorkerConfig.from_settings(settings, worker_id="w", idle_sleep_s=0.005)
    worker = Worker(store, open_blobs(settings.storage), FakeEngine(), config)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        with foreign_write_lock(path, hold_s=2.0):
            time.sleep(1.5)  # several claims ran out of budget meanwhile
            assert thread.is_alive(), "the worker died of a locked database"
        other = SQLiteJobStore.open(path)
        job = submit(other)
        deadline = time.monotonic() + 10
        while other.get(job.id).status is not JobStatus.COMPLETED:
            assert time.monotonic() < deadline, "the worker stopped claiming after the lock"
            time.sleep(0.02)
        other.close()
    finally:
        worker.stop()
        thread.join(timeout=10)
        store.close()
