"""A worker on a real SQLite store and local blob store (its puts can be held), driven by a fake engine: the
rig the worker's own tests share."""

from __future__ import annotations

import dataclasses
import threading

from fluxserve.core.jobs import Job, JobStatus, new_job_id
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import Worker
from tests.support.fakes import FakeEngine, HeldBlobs
from tests.support.specs import make_spec

SPEC = make_spec(num_inference_steps=2)


@dataclasses.dataclass
class Rig:
    """A real SQLite store and local blob store (its puts can be held), a fake engine, a worker thread."""

    store: SQLiteJobStore
    blobs: HeldBlobs
    engine: FakeEngine
    worker: Worker
    files: object
    thread: threading.Thread | None = None
    failure: BaseException | None = None

    def submit(self, prompt: str, **fields: object) -> Job:
        spec = dataclasses.replace(SPEC, prompt=prompt, **fields)
        job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=spec)
        self.store.submit(job)
        return job

    def start(self) -> None:
        def run() -> None:
            try:
                self.worker.run_forever()
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                self.failure = exc

        self.thread = threading.Thread(target=run, name="worker", daemon=True)
        self.thread.start()

    def status(self, job: Job) -> JobStatus:
        return self.store.get(job.id).status

    def generated(self) -> list[str]:
        return [spec.prompt for spec in self.engine.calls]

    def join(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the worker did not stop"
