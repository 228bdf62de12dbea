"""The worker: claim a job, run it on the engine, store its images, write its one terminal state.

Who pays for a failure: an exception inside generation fails that job only and the worker claims the next.
The terminal state is written from `finally`, so no claimed job is left running by this worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from fluxserve.engine.encode import CONTENT_TYPES, EXTENSIONS, data_uri, encode
from fluxserve.jobs import GenerationSpec, Job, JobError, LogLine
from fluxserve.queue.base import JobStore
from fluxserve.storage.base import BlobStore

log = logging.getLogger(__name__)


class Engine(Protocol):
    def generate(self, spec: GenerationSpec, on_step: Callable[[int, int], None]) -> Any: ...


@dataclass
class WorkerConfig:
    worker_id: str = "worker-0"
    lease_s: float = 60.0
    idle_sleep_s: float = 0.02


def failure(exc: BaseException) -> JobError:
    return JobError(
        status_code=500,
        error_type="internal_error",
        detail=f"Generation failed: {type(exc).__name__}: {exc}",
    )


class Worker:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        engine: Engine,
        config: WorkerConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.config = config or WorkerConfig()
        self.clock = clock
        self._stop = threading.Event()

    # -- loop ---------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("worker %s ready", self.config.worker_id)
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.config.idle_sleep_s)

    def stop(self) -> None:
        """Idempotent; the job in flight is finished first."""
        self._stop.set()

    def run_once(self) -> bool:
        """Claim and process one job. False when the queue was empty."""
        self.store.requeue_expired()
        job = self.store.claim(self.config.worker_id, self.config.lease_s)
        if job is None:
            return False
        self.process(job)
        return True

    # -- one job ------------------------------------------------------------------------------------

    def process(self, job: Job) -> None:
        output: dict[str, Any] | None = None
        error = JobError(500, "internal_error", "The worker stopped before finishing this request")
        try:
            self.log(job, "generating")
            generated = self.engine.generate(job.spec, on_step=self._step_logger(job))
            self.log(job, "storing images")
            output = self.build_output(job.spec, generated)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            error = failure(exc)
        finally:
            if output is not None:
                self.store.complete(job.id, output)
            else:
                self.store.fail(job.id, error)

    def _step_logger(self, job: Job) -> Callable[[int, int], None]:
        last_renewal = [self.clock()]

        def on_step(step: int, total: int) -> None:
            self.log(job, f"step {step}/{total}")
            # Keep the lease while a long generation runs, without a write per step.
            if self.clock() - last_renewal[0] > self.config.lease_s / 3:
                self.store.renew_lease(job.id, self.config.worker_id, self.config.lease_s)
                last_renewal[0] = self.clock()

        return on_step

    def log(self, job: Job, message: str) -> None:
        self.store.append_log(job.id, LogLine(message=message, timestamp=self.clock()))

    def build_output(self, spec: GenerationSpec, generated: Any) -> dict[str, Any]:
        return {
            "images": [self.store_image(spec, image) for image in generated.images],
            "timings": generated.timings,
            "seed": spec.seed,
            "has_nsfw_concepts": generated.has_nsfw_concepts,
            "prompt": spec.prompt,
        }

    def store_image(self, spec: GenerationSpec, image: Any) -> dict[str, Any]:
        data = encode(image, spec.output_format)
        content_type = CONTENT_TYPES[spec.output_format]
        if spec.sync_mode:
            url = data_uri(data, content_type)  # sync_mode: nothing is stored
        else:
            key = self.blobs.put(data, content_type, EXTENSIONS[spec.output_format])
            url = self.blobs.url(key, spec.base_url)
        return {"url": url, "content_type": content_type, "width": image.width, "height": image.height}
