"""The API's change feed wakes only the waiters of the job that changed: a sync run sleeps through other jobs'
changes and its own job's steps; a stream of steps wakes at each; a wait for any change wakes at every one; a
write that may touch any job (a lease sweep) wakes them all. Driven by real writes from another store object,
as a worker process makes them."""

from __future__ import annotations

import asyncio

from fluxserve.api.waiting import ChangeFeed
from fluxserve.core.jobs import Job, LogLine, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from tests.support.specs import SPEC

WAKE_S = 5.0  # only the bound on a broken feed: a woken watch returns at once


def submitted(store: SQLiteJobStore, count: int) -> list[str]:
    jobs = [Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC) for _ in range(count)]
    for job in jobs:
        store.submit(job)
    return [job.id for job in jobs]


def test_only_the_changed_jobs_waiters_wake(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    worker_side, api_side = SQLiteJobStore.open(path), SQLiteJobStore.open(path)
    ran, other, last = submitted(worker_side, 3)  # before the API side listens: it hears none of these
    api_side.wait_for_change(0.01)  # bind its doorbell, so it hears every write from here on
    feed = ChangeFeed(api_side)

    async def scenario() -> None:
        with feed.watch(ran) as sync_run, feed.watch(ran, logs=True) as steps, feed.watch(other) as others, \
                feed.watch() as anything, feed.watch(last) as sentinel:  # fmt: skip
            worker_side.append_logs([(ran, LogLine(message="step 1/4", timestamp=1.0))])
            assert worker_side.cancel(last)  # written after the step line: heard after it, or with it
            assert await sentinel.next(WAKE_S)
            assert steps.woken and anything.woken
            assert not sync_run.woken, "a step line is not the end a sync run waits for"
            assert not others.woken, "another job's changes wake nobody here"
            # Woken before it waited (as while re-reading): the wait returns at once, and takes the wake.
            assert await steps.next(WAKE_S) and not steps.woken

            worker_side.purge_finished(before=float("inf"))  # may remove any job: every waiter looks
            assert await sync_run.next(WAKE_S) and await others.next(WAKE_S)

    try:
        asyncio.run(scenario())
    finally:
        feed.stop()
        worker_side.close()
        api_side.close()

