"""How often a running batch asks the store whether its jobs are still its own: at most once per
CHECK_INTERVAL_S (each ask is a read per job on the engine's thread), and a cancel still stops the batch at
the first stage or step after the interval. A whole fast run asks once at most."""

from __future__ import annotations

import pytest

from fluxserve.core.errors import JobCancelled
from fluxserve.core.jobs import Job, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.batch import CHECK_INTERVAL_S, BatchProgress
from fluxserve.worker.loop import Worker, WorkerConfig
from tests.support.fakes import FakeClock, FakeEngine
from tests.support.specs import make_spec


class Ownership:
    """is_ours for BatchProgress: counts the asks; `cancelled` holds the ids no longer ours."""

    def __init__(self) -> None:
        self.asks, self.cancelled = 0, set()

    def __call__(self, job: Job) -> bool:
        self.asks += 1
        return job.id not in self.cancelled


def job() -> Job:
    return Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=make_spec(num_inference_steps=4))


def progress_for(jobs: list[Job], ownership: Ownership, clock: FakeClock) -> BatchProgress:
    return BatchProgress(jobs, lambda lines: None, ownership, clock, monotonic=clock)


def test_asks_at_most_once_per_interval_and_a_cancel_stops_the_next_step_after_it():
    clock, ownership, running = FakeClock(), Ownership(), job()
    progress = progress_for([running], ownership, clock)
    progress.stage("text encode")  # just claimed: that was the check
    progress.stage("denoise")
    progress.step(1, 4)
    assert ownership.asks == 0
    clock.advance(CHECK_INTERVAL_S)
    progress.step(2, 4)
    assert ownership.asks == 1
    ownership.cancelled.add(running.id)
    progress.step(3, 4)  # within the interval of the last ask: not asked, not noticed yet
    assert ownership.asks == 1
    clock.advance(CHECK_INTERVAL_S)
    with pytest.raises(JobCancelled):
        progress.step(3, 4)
    assert ownership.asks == 2


def test_a_job_cancelled_alone_in_a_batch_is_dropped_at_the_next_ask():
    clock, ownership = FakeClock(), Ownership()
    kept, dropped = job(), job()
    progress = progress_for([kept, dropped], ownership, clock)
    ownership.cancelled.add(dropped.id)
    clock.advance(CHECK_INTERVAL_S)
    progress.stage("denoise")
    assert progress.jobs == [kept] and ownership.asks == 2  # one read per job of the batch


class CountingReads:
    """The real store, counting job reads (what an ownership ask costs)."""

    def __init__(self, store: SQLiteJobStore) -> None:
        self.store, self.reads = store, 0

    def get(self, job_id: str):
        self.reads += 1
        return self.store.get(job_id)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


def test_a_fast_run_asks_nothing_per_stage_and_step(tmp_path):
    """FakeEngine runs its stages and steps in well under CHECK_INTERVAL_S: the run reads its job no more
    (asking at every stage and step, a 4-step run read it 8 times)."""
    from fluxserve.blobs.local import LocalBlobStore

    store = CountingReads(SQLiteJobStore.open(tmp_path / "jobs.sqlite3"))
    worker = Worker(store, LocalBlobStore.open(tmp_path / "files"), FakeEngine(),  # type: ignore[arg-type]
                    WorkerConfig(worker_id="w"))  # fmt: skip
    queued = job()
    store.submit(queued)
    assert worker.run_once()
    worker.drain()
    reads = store.reads
    assert store.get(queued.id).status.value == "completed"
    assert reads == 0, reads
    store.close()
