"""A batch's log lines: at most one store write per denoising step for the whole batch (a stage's lines ride with the
next step's write, the last stages' with each job's end), and each job's logs end exactly as one write per
line left them."""

from __future__ import annotations

from typing import Any

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.jobs import Job, JobStatus, LogLine, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import Worker, WorkerConfig
from tests.support.fakes import FakeEngine
from tests.support.specs import make_spec

STEPS = 3


class CountingStore:
    """The real store, counting the worker's log writes (one per call, however many lines it carries)."""

    def __init__(self, store: SQLiteJobStore) -> None:
        self.store, self.log_writes = store, 0

    def append_log(self, job_id: str, line: LogLine) -> None:
        self.log_writes += 1
        self.store.append_log(job_id, line)

    def append_logs(self, entries: Any) -> None:
        self.log_writes += 1
        self.store.append_logs(entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class LastStagesEngine(FakeEngine):
    """One engine call per batch, as FluxEngine: its stages (those after the last step too) and steps are
    reported once, for every job of the batch."""

    def generate_batch(self, specs: list[Any], progress: Any = None, images: Any = None) -> list[Any]:
        self.batches.append(len(specs))
        progress.stage("denoise")
        for step in range(1, STEPS + 1):
            progress.step(step, STEPS)
        for stage in ("vae decode", "to image"):
            progress.stage(stage)
        return [self.generate(spec) for spec in specs]


def test_at_most_one_log_write_per_step_for_the_whole_batch(tmp_path):
    store = CountingStore(SQLiteJobStore.open(tmp_path / "jobs.sqlite3"))
    engine = LastStagesEngine()
    worker = Worker(store, LocalBlobStore.open(tmp_path / "files"), engine,  # type: ignore[arg-type]
                    WorkerConfig(worker_id="w", max_batch=2, batch_window_s=0.2))  # fmt: skip
    spec = make_spec(acceleration="regular", num_inference_steps=STEPS)
    jobs = [Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=spec) for _ in range(2)]
    for job in jobs:
        store.submit(job)
    assert worker.run_once()
    worker.drain()
    assert engine.batches == [2]
    # At most one per step for both jobs (off the engine's thread: steps reported while one is in flight go
    # together in the next, and those not written when the call ends go with each job's end), then one with
    # each job's end.
    assert len(jobs) <= store.log_writes <= STEPS + len(jobs), store.log_writes
    for job in jobs:
        assert store.get(job.id).status is JobStatus.COMPLETED
        assert [line.message for line in store.logs(job.id)] == [
            "denoise", *(f"step {i}/{STEPS}" for i in range(1, STEPS + 1)), "vae decode", "to image", "store"]
    store.close()
