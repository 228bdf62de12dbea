"""The SQLite store's doorbell: a change in one store object wakes a waiter on another (other processes)
and on itself (waiters in the same API process)."""

from __future__ import annotations

import threading
import time

from fluxserve.core.jobs import Job, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from tests.unit.test_store_contract import SPEC


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


def test_without_a_change_the_wait_times_out(tmp_path):
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    started = time.monotonic()
    assert store.wait_for_change(0.2) is False
    assert 0.15 < time.monotonic() - started < 2
    store.close()
