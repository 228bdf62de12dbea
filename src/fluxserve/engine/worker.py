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

from fluxserve.config import Settings
from fluxserve.engine.encode import CONTENT_TYPES, EXTENSIONS, data_uri, encode
from fluxserve.errors import JobCancelled
from fluxserve.image_inputs import ImageFetcher, ImageInputError
from fluxserve.jobs import GenerationSpec, Job, JobError, JobStatus, LogLine
from fluxserve.metrics import WorkerStats
from fluxserve.queue.base import JobStore
from fluxserve.storage.base import BlobStore

log = logging.getLogger(__name__)

# A worker that has not reported for this long no longer counts towards readiness.
STATE_TTL_S = 15.0
# Errors after which the device (and so this process) cannot be trusted with another job.
FATAL_MARKERS = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "NCCL error")


class Engine(Protocol):
    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        """One result per spec, all generated in one pipeline call."""


class FatalWorkerError(Exception):
    """The process is suspect: stop claiming, leave the job to its lease."""


def is_fatal(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in FATAL_MARKERS)


@dataclass
class WorkerConfig:
    worker_id: str = "worker-0"
    lease_s: float = 30.0
    max_attempts: int = 3
    # Longest idle wait between looks at the queue; a submission wakes the worker sooner.
    idle_sleep_s: float = 0.5
    # Cross-request batching: up to max_batch compatible jobs per pipeline call, gathered for at most
    # batch_window_s after the first one is claimed (acceleration=none jobs always run alone).
    max_batch: int = 4
    batch_window_s: float = 0.01
    # Fair sharing: a key with this many running jobs waits while other keys' jobs run (0: no limit).
    max_per_key: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerConfig:
        queue = settings.queue
        fields = dict(worker_id=settings.worker_id, lease_s=queue.lease_s, max_attempts=queue.max_attempts,
                      max_batch=queue.max_batch, batch_window_s=queue.batch_window_s,
                      max_per_key=queue.max_running_per_key)  # fmt: skip
        return cls(**{**fields, **overrides})


class BatchProgress:
    """The engine's Progress for a batch: log lines to each job, and stop once none of them is ours any more
    (a job cancelled alone in a batch of several is dropped when the batch ends)."""

    def __init__(self, worker: Worker, jobs: list[Job]) -> None:
        self.worker = worker
        self.jobs = jobs

    def stage(self, name: str) -> None:
        self.check_still_ours()
        for job in self.jobs:
            self.worker.log(job, name)

    def step(self, step: int, total: int) -> None:
        for job in self.jobs:
            self.worker.log(job, f"step {step}/{total}")
        if step < total:
            self.check_still_ours()

    def check_still_ours(self) -> None:
        self.jobs = [job for job in self.jobs if self.is_ours(job)]
        if not self.jobs:
            raise JobCancelled("every job of the batch was cancelled")

    def is_ours(self, job: Job) -> bool:
        current = self.worker.store.get(job.id)
        return current is not None and current.status is JobStatus.RUNNING and current.worker_id == self.worker.id


class LeaseKeeper:
    """Renews the running job's lease in the background, however long a single step takes."""

    def __init__(self, store: JobStore, job_ids: list[str], config: WorkerConfig) -> None:
        self.store, self.job_ids, self.config = store, job_ids, config
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.config.lease_s / 3):
            for job_id in self.job_ids:  # a job cancelled or requeued meanwhile is noticed at the next step
                self.store.renew_lease(job_id, self.config.worker_id, self.config.lease_s)


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
        self._reported_at = float("-inf")
        self.stats = WorkerStats()

    @property
    def id(self) -> str:
        return self.config.worker_id

    # -- loop ---------------------------------------------------------------------------------------

    def run_forever(self, warmup: tuple[tuple[int, int, str, int], ...] = ()) -> None:
        if warmup:
            self.report("warming")
            self.engine.warm_up(warmup)  # type: ignore[attr-defined]
        self.report("ready")
        log.info("worker %s ready", self.id)
        while not self._stop.is_set():
            if not self.run_once():
                self.store.wait_for_change(self.config.idle_sleep_s)  # a submit anywhere wakes us at once
            self.report("ready", throttle=True)
        self.report("stopping")
        log.info("worker %s stopped", self.id)

    def report(self, state: str, throttle: bool = False) -> None:
        """Tell the store (and so /ready) what this worker is doing; refreshed well within its ttl."""
        now = time.monotonic()
        if throttle and now - self._reported_at < STATE_TTL_S / 3:
            return
        self._reported_at = now
        memory = getattr(self.engine, "gpu_memory_bytes", None)
        self.stats.gpu_memory_bytes = memory() if callable(memory) else None
        self.store.report_worker(self.id, state, STATE_TTL_S, self.stats.snapshot())

    def stop(self) -> None:
        """Idempotent; the job in flight is finished first."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> bool:
        """Claim a job (and compatible ones to batch with it) and process them. False when the queue was empty."""
        self.store.requeue_expired(self.config.max_attempts)
        job = self.store.claim(self.id, self.config.lease_s, self.config.max_per_key)
        if job is None:
            return False
        self.process([job, *self.gather(job)])
        return True

    def gather(self, job: Job) -> list[Job]:
        """Compatible queued jobs to run in the same pipeline call, waiting at most batch_window_s for them."""
        key, room = job.spec.batch_key, self.config.max_batch - 1
        if key is None or room <= 0:
            return []
        found: list[Job] = []
        deadline = time.monotonic() + self.config.batch_window_s
        while True:
            found += self.store.claim_matching(self.id, self.config.lease_s, key, room - len(found))
            if len(found) >= room or time.monotonic() >= deadline:
                return found
            time.sleep(min(0.002, self.config.batch_window_s))

    # -- one batch ----------------------------------------------------------------------------------

    def process(self, jobs: list[Job]) -> None:
        """Every job of the batch ends in exactly one terminal state, written in `finally`."""
        stopped = JobError(500, "internal_error", "The worker stopped before finishing")
        ends: dict[str, tuple[dict[str, Any] | None, JobError | None]] = {job.id: (None, stopped) for job in jobs}
        blob_keys: dict[str, list[str]] = {job.id: [] for job in jobs}
        self.stats.busy = 1
        self.report("ready")
        try:
            with LeaseKeeper(self.store, [job.id for job in jobs], self.config):
                ready = self.prepare_inputs(jobs, ends)
                if ready:
                    specs = [job.spec for job, _ in ready]
                    results = self.engine.generate_batch(specs, BatchProgress(self, jobs), [i for _, i in ready])
                    sizes = [(image.width, image.height) for result in results for image in result.images]
                    self.stats.batch_ran(len(specs), results[0].timings, sizes)
                    for (job, _), generated in zip(ready, results):
                        self.log(job, "store")
                        ends[job.id] = (self.build_output(job.spec, generated, blob_keys[job.id]), None)
        except JobCancelled:
            log.info("batch %s stopped: cancelled or no longer leased to %s", [j.id for j in jobs], self.id)
            ends = {job_id: (out, None) for job_id, (out, _) in ends.items()}  # the store holds how they ended
        except Exception as exc:
            if is_fatal(exc):
                self.stop()  # leave the jobs to their leases: another worker, on a sound device, runs them
                ends = {job_id: (None, None) for job_id in ends}
                raise FatalWorkerError(str(exc)) from exc
            log.exception("batch %s failed", [j.id for j in jobs])
            failed = JobError.generation_failed(exc)
            ends = {job_id: (out, failed if out is None and err is stopped else err)
                    for job_id, (out, err) in ends.items()}  # fmt: skip
        finally:
            for job in jobs:
                output, error = ends[job.id]
                self.finish(job, output, blob_keys[job.id], error)
            self.stats.busy = 0
            self.report("ready")

    def prepare_inputs(self, jobs: list[Job], ends: dict[str, Any]) -> list[tuple[Job, Any]]:
        """Each job's input image (Redux); a job whose image_url is unusable fails alone with a 422."""
        ready = []
        for job in jobs:
            try:
                ready.append((job, self.input_image(job)))
            except ImageInputError as exc:
                log.info("job %s: unusable image_url: %s", job.id, exc)
                ends[job.id] = (None, JobError.bad_image_url(str(exc)))
        return ready

    def input_image(self, job: Job) -> Any:
        """Redux's input image, fetched and decoded here, outside the engine; nothing fetched is kept."""
        if job.spec.image_url is None:
            return None
        if self.images is None:
            raise ImageInputError("cannot be fetched: this worker has no image fetcher configured")
        self.log(job, "fetch image")
        return self.images.load(job.spec.image_url, job.spec.base_url)

    def finish(self, job: Job, output: dict[str, Any] | None, blob_keys: list[str], error: JobError | None) -> str:
        """Write the job's end; return how it ended (for the metrics)."""
        if output is not None and self.store.complete(job.id, output, blob_keys):
            self.stats.job_ended("completed", *self.latencies(job))
            return "completed"
        if output is None and error is not None and self.store.fail(job.id, error):
            self.stats.job_ended("failed", *self.latencies(job))
            return "failed"
        current = self.store.get(job.id)
        if current is not None and current.output is not None and current.worker_id == self.id:
            return "completed"  # our completion did land (a reply lost to a store restart): the images are its output
        # The job ended some other way meanwhile (cancelled): its images belong to no one.
        for key in blob_keys:
            self.blobs.delete(key)
        status = current.status.value if current is not None else "cancelled"
        self.stats.job_ended(status, *self.latencies(job))
        return status

    def latencies(self, job: Job) -> tuple[float | None, float]:
        """(queue wait, submit to end) in seconds."""
        wait = job.started_at - job.created_at if job.started_at else None
        return wait, self.clock() - job.created_at

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
