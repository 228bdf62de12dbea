"""Change signals. The SQLite store's doorbell: a change in one store object wakes a waiter on another (other
processes) and on itself (waiters in the same API process). And on both stores, an idle worker is not woken by
its own writes, which change nothing."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.jobs import Job, LogLine, new_job_id
from fluxserve.store.redis import RedisJobStore
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import Worker, WorkerConfig
from tests.support.fakes import FakeEngine
from tests.support.specs import SPEC


def wait_in_thread(store, timeout=5.0):
    result = {}

    def run():
        started = time.monotonic()
        result["woken"] = store.wait_for_change(timeout)
        result["after"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_write_wakes_waiters_elsewhere_and_here(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    here, there = SQLiteJobStore.open(path), SQLiteJobStore.open(path)
    for waiter in (there, here):
        waiter.wait_for_change(0.01)  # bind its socket
        thread, result = wait_in_thread(waiter)
        time.sleep(0.1)
        here.submit(Job(id=new_job_id(), app="a", spec=SPEC))
        thread.join()
        assert result["woken"] and result["after"] < 1.0
    here.close()
    there.close()


def test_a_write_naming_more_jobs_than_a_ring_carries_wakes_every_waiter(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    here, there = SQLiteJobStore.open(path), SQLiteJobStore.open(path)
    there.wait_for_change(0.01)  # bind its socket
    ids = [new_job_id() for _ in range(200)]
    here.append_logs([(job_id, LogLine(message="step 1/4", timestamp=1.0)) for job_id in ids])
    heard = there.wait_for_change(5.0)
    assert heard.every_job and heard.touches(ids[0]) and heard.touches(new_job_id())
    here.append_logs([(ids[0], LogLine(message="step 2/4", timestamp=2.0))])
    heard = there.wait_for_change(5.0)
    assert not heard.every_job and heard.touches(ids[0], logs=True) and not heard.touches(ids[1], logs=True)
    here.close()
    there.close()


def test_without_a_change_the_wait_times_out(tmp_path):
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    started = time.monotonic()
    assert not store.wait_for_change(0.2)
    assert 0.15 < time.monotonic() - started < 2
    store.close()


# -- an idle worker: its own claims and sweeps change nothing, so they must not wake it ---------------------

IDLE_SLEEP_S = 0.1


def idle_loops(store, tmp_path) -> tuple[list[int], Callable[[], None]]:
    """Run a worker on an empty queue; return a counter of its loops and a function stopping it."""
    config = WorkerConfig(idle_sleep_s=IDLE_SLEEP_S)
    worker = Worker(store, LocalBlobStore.open(tmp_path / "blobs"), FakeEngine(), config)
    loops = []
    run_once = worker.run_once
    worker.run_once = lambda: loops.append(1) or run_once()
    thread = threading.Thread(target=worker.run_forever)
    thread.start()

    def stop():
        worker.stop()
        thread.join(timeout=10)

    return loops, stop


def test_an_idle_worker_on_sqlite_looks_at_the_queue_once_per_idle_interval(tmp_path):
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    loops, stop = idle_loops(store, tmp_path)
    time.sleep(0.3)
    before = len(loops)
    time.sleep(1.0)
    counted = len(loops) - before
    stop()
    store.close()
    assert counted <= 1.0 / IDLE_SLEEP_S + 2, f"{counted} idle loops in 1 s"


def test_an_idle_worker_on_redis_makes_a_few_round_trips_per_idle_interval(redis_server, tmp_path):
    """Regression: every script published a change, so an idle worker's own claim woke its own wait (about
    850 loops and 6,700 Redis commands a second; now 10 loops and about 22 commands)."""
    import redis

    store = RedisJobStore.open(redis_server.url, namespace=f"test-{uuid.uuid4().hex}:")
    probe = redis.Redis.from_url(redis_server.url)
    loops, stop = idle_loops(store, tmp_path)
    time.sleep(0.3)
    before, calls_before = len(loops), commands(probe)
    time.sleep(1.0)
    counted, calls = len(loops) - before, commands(probe) - calls_before - 1  # less the INFO itself
    stop()
    store.close()
    assert counted <= 1.0 / IDLE_SLEEP_S + 2, f"{counted} idle loops in 1 s"
    assert calls <= 3 * (1.0 / IDLE_SLEEP_S + 2), f"{calls} Redis commands in 1 s"


def commands(client) -> int:
    """Commands the Redis server has run, from every client."""
    return sum(stats["calls"] for stats in client.info("commandstats").values())
