"""The worker: claim a job, run it on the engine, store its images, write its one terminal state.

Who pays for a failure:
- an exception inside generation fails that job only, and the worker claims the next;
- a cancel (or losing the job's lease) stops the job between denoising steps; the store already holds its end;
- an error that makes the process suspect (CUDA) stops the worker without touching the job: its lease expires
  and another worker runs it.
The terminal state is written from `finally`, so no job this worker claimed is left running by it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from fluxserve.engine.encode import CONTENT_TYPES, EXTENSIONS, data_uri, encode
from fluxserve.errors import JobCancelled
from fluxserve.image_inputs import ImageFetcher, ImageInputError
from fluxserve.jobs import GenerationSpec, Job, JobError, JobStatus, LogLine
from fluxserve.queue.base import JobStore
from fluxserve.storage.base import BlobStore

log = logging.getLogger(__name__)

# Errors after which the device (and so this process) cannot be trusted with another job.
FATAL_MARKERS = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "NCCL error")


class Engine(Protocol):
    def generate(self, spec: GenerationSpec, progress: Any = None, image: Any = None) -> Any: ...


class FatalWorkerError(Exception):
    """The process is suspect: stop claiming, leave the job to its lease."""


def is_fatal(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in FATAL_MARKERS)


@dataclass
class WorkerConfig:
    worker_id: str = "worker-0"
    lease_s: float = 30.0
    max_attempts: int = 3
    idle_sleep_s: float = 0.02


class JobProgress:
    """The engine's Progress for one job: log lines to the store, and stop when the job is no longer ours."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker = worker
        self.job = job

    def stage(self, name: str) -> None:
        self.check_still_ours()
        self.worker.log(self.job, name)

    def step(self, step: int, total: int) -> None:
        self.worker.log(self.job, f"step {step}/{total}")
        if step < total:
            self.check_still_ours()

    def check_still_ours(self) -> None:
        current = self.worker.store.get(self.job.id)
        if current is None or current.status is not JobStatus.RUNNING or current.worker_id != self.worker.id:
            raise JobCancelled(self.job.id)


class LeaseKeeper:
    """Renews the running job's lease in the background, however long a single step takes."""

    def __init__(self, store: JobStore, job_id: str, config: WorkerConfig) -> None:
        self.store, self.job_id, self.config = store, job_id, config
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.config.lease_s / 3):
            if not self.store.renew_lease(self.job_id, self.config.worker_id, self.config.lease_s):
                return  # cancelled or requeued: JobProgress notices at the next step


class Worker:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        engine: Engine,
        config: WorkerConfig | None = None,
        clock: Callable[[], float] = time.time,
        images: ImageFetcher | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.images = images
        self.config = config or WorkerConfig()
        self.clock = clock
        self._stop = threading.Event()

    @property
    def id(self) -> str:
        return self.config.worker_id

    # -- loop ---------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("worker %s ready", self.id)
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.config.idle_sleep_s)
        log.info("worker %s stopped", self.id)

    def stop(self) -> None:
        """Idempotent; the job in flight is finished first."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> bool:
        """Claim and process one job. False when the queue was empty."""
        self.store.requeue_expired(self.config.max_attempts)
        job = self.store.claim(self.id, self.config.lease_s)
        if job is None:
            return False
        self.process(job)
        return True

    # -- one job ------------------------------------------------------------------------------------

    def process(self, job: Job) -> None:
        output: dict[str, Any] | None = None
        blob_keys: list[str] = []
        error: JobError | None = JobError(500, "internal_error", "The worker stopped before finishing")
        try:
            with LeaseKeeper(self.store, job.id, self.config):
                image = self.input_image(job)
                generated = self.engine.generate(job.spec, JobProgress(self, job), image)
                self.log(job, "store")
                output = self.build_output(job.spec, generated, blob_keys)
        except ImageInputError as exc:
            log.info("job %s: unusable image_url: %s", job.id, exc)
            error = JobError.bad_image_url(str(exc))
        except JobCancelled:
            log.info("job %s stopped: cancelled or no longer leased to %s", job.id, self.id)
            error = None  # the store already records how it ended
        except Exception as exc:
            if is_fatal(exc):
                self.stop()
                error = None  # leave the job to its lease: another worker, on a sound device, runs it
                raise FatalWorkerError(str(exc)) from exc
            log.exception("job %s failed", job.id)
            error = JobError.generation_failed(exc)
        finally:
            self.finish(job, output, blob_keys, error)

    def input_image(self, job: Job) -> Any:
        """Redux's input image, fetched and decoded here, outside the engine; nothing fetched is kept."""
        if job.spec.image_url is None:
            return None
        if self.images is None:
            raise ImageInputError("cannot be fetched: this worker has no image fetcher configured")
        self.log(job, "fetch image")
        return self.images.load(job.spec.image_url, job.spec.base_url)

    def finish(self, job: Job, output: dict[str, Any] | None, blob_keys: list[str], error: JobError | None) -> None:
        if output is not None and self.store.complete(job.id, output, blob_keys):
            return
        if output is None and error is not None:
            self.store.fail(job.id, error)
        current = self.store.get(job.id)
        if current is not None and current.output is not None and current.worker_id == self.id:
            return  # our completion did land (a reply lost to a store restart): the images are its output
        # The job ended some other way meanwhile (cancelled): its images belong to no one.
        for key in blob_keys:
            self.blobs.delete(key)

    def log(self, job: Job, message: str) -> None:
        self.store.append_log(job.id, LogLine(message=message, timestamp=self.clock()))

    def build_output(self, spec: GenerationSpec, generated: Any, blob_keys: list[str]) -> dict[str, Any]:
        return {
            "images": [self.store_image(spec, image, blob_keys) for image in generated.images],
            "timings": generated.timings,
            "seed": spec.seed,
            "has_nsfw_concepts": generated.has_nsfw_concepts,
            "prompt": spec.prompt,
        }

    def store_image(self, spec: GenerationSpec, image: Any, blob_keys: list[str]) -> dict[str, Any]:
        data = encode(image, spec.output_format)
        content_type = CONTENT_TYPES[spec.output_format]
        if spec.sync_mode:
            url = data_uri(data, content_type)  # sync_mode: nothing is stored
        else:
            key = self.blobs.put(data, content_type, EXTENSIONS[spec.output_format])
            blob_keys.append(key)
            url = self.blobs.url(key, spec.base_url)
        return {"url": url, "content_type": content_type, "width": image.width, "height": image.height}
