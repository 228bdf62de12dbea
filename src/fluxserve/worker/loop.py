"""The worker: claim a job, run it on the engine, store its images, write its one terminal state.

Two threads share a batch's life, so the GPU never waits on JPEG encoding or the blob store:
- this loop claims batch N+1 and runs it on the engine (decide, execute: each job gets an outcome);
- meanwhile a delivery thread encodes and stores batch N's images and writes each of its jobs' end (record).
At most one batch waits to be delivered: handing over the next waits for the previous delivery to end.
Nor does the GPU wait on a Redux job's image_url (a slow server may hold it for the whole fetch timeout):
a claimed Redux job is fetched on a small pool of fetch threads (Fetches) while the loop runs other jobs; once
its image arrives it runs in a later engine call. While `fetch_concurrency` fetches are pending the loop
claims nothing more, so it never takes more jobs ahead than it can fetch at once.

Who pays for a failure:
- an exception inside generation fails that batch's jobs only, and the worker claims the next;
- an exception while encoding or storing a job's images fails that job only;
- a cancel (or losing the job's lease) stops the job between denoising steps; the store already holds its end;
- an error that makes the process suspect (CUDA) stops the worker without touching the job: its lease expires
  and another worker runs it.
The terminal state is written from `finally` on the delivery thread, and the job's lease is renewed until
then, so no job this worker claimed is left running by it. The worker drains its deliveries before it stops.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from fluxserve.core.settings import Settings, UrlSettings, WarmupSettings
from fluxserve.worker.outputs import CONTENT_TYPES, EXTENSIONS, data_uri, encode
from fluxserve.core.errors import JobCancelled, StoreBusy, is_device_fatal
from fluxserve.net.image_inputs import ImageFetcher, ImageInputError
from fluxserve.core.jobs import GenerationSpec, Job, JobError, JobStatus, LogLine
from fluxserve.worker.stats import WorkerStats
from fluxserve.store.protocols import JobStore
from fluxserve.blobs.base import BlobStore

log = logging.getLogger(__name__)

# A worker that has not reported for this long no longer counts towards readiness.
STATE_TTL_S = 15.0
# While images are being fetched, the idle loop looks for an arrived one at least this often: the store's
# change signal (which wakes it for a submit) knows nothing of fetch threads.
FETCH_POLL_S = 0.05


class Engine(Protocol):
    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        """One result per spec, all generated in one pipeline call."""

    def warm_up(self, warmup: WarmupSettings) -> None:
        """Run the configured shapes once, so no request pays a first-call compile."""

    def gpu_memory_bytes(self) -> float | None:
        """Peak GPU memory allocated; None off the GPU."""

    def describe(self) -> dict[str, Any]:
        """What it runs: {"device", "levels": {level: [switch, ...]}, "skipped": {switch: reason}, ...}."""


class FatalWorkerError(Exception):
    """The process is suspect: stop claiming, leave the job to its lease."""


# -- what happened to each job of a batch, decided by the loop and recorded by the delivery thread ----------


@dataclass(frozen=True)
class Generated:
    """Its images exist; they are still to be encoded and stored."""

    result: Any


@dataclass(frozen=True)
class Failed:
    error: JobError


@dataclass(frozen=True)
class EndedElsewhere:
    """Cancelled, or no longer leased to this worker: the store already holds how it ended."""


@dataclass(frozen=True)
class LeftToLease:
    """The device is suspect: no end is written; the lease runs out and another worker runs the job."""


Outcome = Generated | Failed | EndedElsewhere | LeftToLease
# Every job's outcome until the engine call decides it: what it ends with if the worker stops in between.
UNFINISHED = Failed(JobError(500, "internal_error", "The worker stopped before finishing"))


@dataclass
class WorkerConfig:
    worker_id: str = "worker-0"
    # The GPU this worker runs on, as the operator knows it (nvidia-smi's index or a UUID); None: not pinned.
    gpu: str | None = None
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
    # image_url fetches run at once, off the GPU thread; while this many are pending nothing more is claimed.
    fetch_concurrency: int = UrlSettings.fetch_concurrency

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerConfig:
        queue = settings.queue
        fields = dict(worker_id=settings.worker_id, gpu=settings.gpu, lease_s=queue.lease_s,
                      max_attempts=queue.max_attempts, max_batch=queue.max_batch,
                      batch_window_s=queue.batch_window_s, max_per_key=queue.max_running_per_key,
                      fetch_concurrency=settings.urls.fetch_concurrency)  # fmt: skip
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
        return self.worker.is_ours(job)


class LeaseKeeper:
    """Renews a batch's leases in the background, however long a single step or its delivery takes."""

    def __init__(self, store: JobStore, job_ids: list[str], config: WorkerConfig) -> None:
        self.store, self.job_ids, self.config = store, job_ids, config
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.config.lease_s / 3):
            for job_id in self.job_ids:  # a job cancelled or requeued meanwhile is noticed at the next step
                try:
                    self.store.renew_lease(job_id, self.config.worker_id, self.config.lease_s)
                except StoreBusy:  # the store stayed locked: the next renewal may still come within the lease
                    log.warning("lease of %s not renewed: the job store stayed locked", job_id)


class LeaseKeepers:
    """Several keepers stopped as one: a batch of jobs whose images were fetched keeps renewing their
    leases with the keepers that held them during the fetch (no gap in renewals, no join on the loop)."""

    def __init__(self, keepers: list[LeaseKeeper]) -> None:
        self.keepers = keepers

    def stop(self) -> None:
        for keeper in self.keepers:
            keeper.stop()


@dataclass
class Batch:
    """One pipeline call's jobs, from their claim until each has its terminal state; leased all along."""

    jobs: list[Job]
    keeper: LeaseKeeper | LeaseKeepers
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # Redux jobs' input images, fetched before the batch was formed: the decoded image, or the fetch's error.
    images: dict[str, Future[Any]] = field(default_factory=dict)


@dataclass(eq=False)  # each fetch is itself: compared by identity
class Fetch:
    """A claimed Redux job whose image_url is being fetched on a fetch thread; its lease renewed meanwhile."""

    job: Job
    keeper: LeaseKeeper
    image: Future[Any]


class Fetches:
    """The worker's fetch threads and the jobs they fetch for, in claim order. Used by the loop's thread only;
    the fetch threads just complete their futures (and set `arrived`, which ends the loop's idle wait)."""

    def __init__(self, load: Callable[[Job], Any], concurrency: int) -> None:
        self._load = load
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="image-fetch")
        self.pending: list[Fetch] = []
        self.arrived = threading.Event()

    @property
    def free(self) -> int:
        """Fetches that can start now without waiting for a thread; the loop claims no Redux job beyond."""
        return self.concurrency - len(self.pending)

    def start(self, job: Job, keeper: LeaseKeeper) -> None:
        image = self._pool.submit(self._load, job)
        image.add_done_callback(lambda _: self.arrived.set())
        self.pending.append(Fetch(job, keeper, image))

    def take_arrived(self, limit: int, window_s: float) -> list[Fetch]:
        """The oldest fetch that ended (image or error) and those that can share its engine call: compatible
        ones ended too, or ending within window_s (Redux jobs claimed together arrive together; the batch
        window bounds how long one waits for its batch-mates, as when claiming)."""
        self.arrived.clear()  # before looking: a fetch ending from here on sets it again
        first = next((fetch for fetch in self.pending if fetch.image.done()), None)
        if first is None:
            return []
        key = first.job.spec.batch_key
        mates = [fetch for fetch in self.pending if fetch is not first and fetch.job.spec.batch_key == key]
        mates = mates[: limit - 1] if key is not None else []
        if mates and not all(mate.image.done() for mate in mates):
            wait_for_futures([mate.image for mate in mates], timeout=window_s)
        taken = [first, *(mate for mate in mates if mate.image.done())]
        self.pending = [fetch for fetch in self.pending if fetch not in taken]
        return taken

    def abandon(self) -> None:
        """The worker is going down without running them: leave these jobs to their leases (another worker
        runs them once they lapse). A fetch in flight ends on its own, within the fetch timeout; its image is
        dropped."""
        for fetch in self.pending:
            fetch.image.cancel()
            fetch.keeper.stop()
        self.pending = []
        self._pool.shutdown(wait=False, cancel_futures=True)


class Deliveries:
    """Delivers batches in order on a background thread, one at a time. Handing over a batch waits for the
    previous delivery to end, so at most one batch waits (memory stays bounded) and a slow blob store slows
    the loop down instead of piling up images."""

    def __init__(self, deliver: Callable[[Batch], None]) -> None:
        self._deliver = deliver
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def hand_off(self, batch: Batch) -> None:
        try:
            self.drain()
        except BaseException:
            batch.keeper.stop()  # the worker is going down: leave this batch to its leases
            raise
        self._thread = threading.Thread(target=self._run, args=(batch,), name="delivery", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Wait for the delivery in flight; what broke it (the store gone...) is raised here, as if inline."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self, batch: Batch) -> None:
        try:
            self._deliver(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which stops on it
            self._failure = exc


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
        self._report_lock = threading.Lock()
        self._state = "ready"
        self._reported_at = float("-inf")
        self.stats = WorkerStats()
        self.stats.info = self.describe()
        self.deliveries = Deliveries(self.deliver)
        self.fetches = Fetches(self.input_image, self.config.fetch_concurrency)

    @property
    def id(self) -> str:
        return self.config.worker_id

    # -- loop ---------------------------------------------------------------------------------------

    def run_forever(self, warmup: WarmupSettings | None = None) -> None:
        try:
            if warmup is not None and warmup.sizes:
                self.report("warming")
                self.engine.warm_up(warmup)
                self.stats.info = self.describe()  # a switch that failed to warm up is no longer run
            self.report("ready")
            self.log_start()
            # Once stopped, claim nothing more but run the jobs whose images are still being fetched.
            while not self._stop.is_set() or self.fetches.pending:
                try:
                    if not self.run_once():
                        self.wait_for_work()
                    self.report("ready", throttle=True)
                except StoreBusy:
                    # Another process kept the store locked past its retry budget: that one operation failed (a
                    # job it left claimed is requeued when its lease runs out). The loaded model is kept.
                    log.warning("worker %s: the job store stayed locked; trying again", self.id, exc_info=True)
        finally:
            self.fetches.abandon()  # jobs are left pending only when going down on an error
            self.drain()
        self.report("stopping")
        log.info("worker %s stopped", self.id)

    def log_start(self) -> None:
        info = self.stats.info
        if info.get("gpu") is not None and info.get("device") == "cpu":
            log.warning("worker %s was given GPU %s, but torch sees no usable CUDA device: it runs on CPU",
                        self.id, info["gpu"])  # fmt: skip
        for line in start_lines(self.id, info):
            log.info("%s", line)

    def describe(self) -> dict[str, Any]:
        """What this worker runs, for /ready, /metrics and its start log: its GPU, and the engine's own
        account of its device and of the switches each level runs with (an engine without describe() says
        nothing)."""
        describe = getattr(self.engine, "describe", None)
        return {"gpu": self.config.gpu, **(describe() if callable(describe) else {})}

    def report(self, state: str | None = None, throttle: bool = False) -> None:
        """Tell the store (and so /ready) what this worker is doing (None: the same as last time); refreshed
        well within its ttl. Both threads report; the lock makes the last write carry the latest numbers."""
        with self._report_lock:
            now = time.monotonic()
            if throttle and now - self._reported_at < STATE_TTL_S / 3:
                return
            self._state, self._reported_at = state or self._state, now
            self.stats.gpu_memory_bytes = self.engine.gpu_memory_bytes()
            self.store.report_worker(self.id, self._state, STATE_TTL_S, self.stats.snapshot())

    def stop(self) -> None:
        """Idempotent, and never blocks (a signal handler calls it): the loop finishes the batch in flight and
        the jobs whose images are being fetched (within the fetch timeout), waits for their delivery, then
        reports "stopping"."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def drain(self) -> None:
        """Wait until every batch handed to the delivery thread has its jobs' ends written."""
        self.deliveries.drain()

    def run_once(self) -> bool:
        """Run jobs whose input images arrived (claimed earlier, so first), else claim a job (and compatible
        ones to batch with it) and run it or start fetching its image. False when there was nothing to do."""
        self.store.requeue_expired(self.config.max_attempts)
        arrived = self.fetches.take_arrived(self.config.max_batch, self.config.batch_window_s)
        if arrived:
            self.process_fetched(arrived)
            return True
        if self.stopping or self.fetches.free <= 0:
            return False  # claim no more jobs than can be fetched at once: the rest stay queued (and fair)
        job = self.store.claim(self.id, self.config.lease_s, self.config.max_per_key)
        if job is None:
            return False
        room = self.config.max_batch - 1
        if needs_fetch(job):
            room = min(room, self.fetches.free - 1)  # batch-mates are Redux jobs too, each needing a fetch
        jobs = [job, *self.gather(job, room)]
        for redux in filter(needs_fetch, jobs):
            self.start_fetch(redux)
        if runnable := [job for job in jobs if not needs_fetch(job)]:
            self.process(runnable)
        return True

    def wait_for_work(self) -> None:
        """Until the store changes (a submit anywhere wakes us at once), an image arrives, or idle_sleep_s."""
        if not self.fetches.pending:
            self.store.wait_for_change(self.config.idle_sleep_s)
            return
        deadline = time.monotonic() + self.config.idle_sleep_s
        while not self.fetches.arrived.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.store.wait_for_change(min(left, FETCH_POLL_S)):
                return

    def gather(self, job: Job, room: int) -> list[Job]:
        """Up to `room` compatible queued jobs to run in the same pipeline call, waiting at most
        batch_window_s for them."""
        key = job.spec.batch_key
        if key is None or room <= 0:
            return []
        found: list[Job] = []
        deadline = time.monotonic() + self.config.batch_window_s
        while True:
            found += self.store.claim_matching(self.id, self.config.lease_s, key, room - len(found))
            if len(found) >= room or time.monotonic() >= deadline:
                return found
            time.sleep(min(0.002, self.config.batch_window_s))

    # -- one batch: executed here, delivered on the delivery thread ---------------------------------

    def process(self, jobs: list[Job]) -> None:
        """Run the batch on the engine, then hand it over for delivery, which writes every job's end."""
        keeper = LeaseKeeper(self.store, [job.id for job in jobs], self.config).start()
        self.run_batch(Batch(jobs, keeper, {job.id: UNFINISHED for job in jobs}))

    def start_fetch(self, job: Job) -> None:
        """Fetch the job's image on a fetch thread, its lease renewed until its batch is delivered."""
        keeper = LeaseKeeper(self.store, [job.id], self.config).start()
        try:
            self.fetches.start(job, keeper)
        except BaseException:
            keeper.stop()  # not started: the job is left to its lease
            raise

    def process_fetched(self, fetched: list[Fetch]) -> None:
        """Jobs whose fetch ended, as one batch (leased by the keepers of their fetches)."""
        jobs = [fetch.job for fetch in fetched]
        keeper = LeaseKeepers([fetch.keeper for fetch in fetched])
        images = {fetch.job.id: fetch.image for fetch in fetched}
        self.run_batch(Batch(jobs, keeper, {job.id: UNFINISHED for job in jobs}, images))

    def run_batch(self, batch: Batch) -> None:
        try:
            self.execute(batch)
        finally:
            self.deliveries.hand_off(batch)

    def execute(self, batch: Batch) -> None:
        """One engine call decides each job's outcome; a suspect device leaves them all to their leases."""
        outcomes = batch.outcomes
        self.stats.busy = 1
        self.report("ready")
        try:
            ready = self.prepare_inputs(batch, outcomes)
            if ready:
                specs = [job.spec for job, _ in ready]
                progress = BatchProgress(self, batch.jobs)
                results = self.engine.generate_batch(specs, progress, [image for _, image in ready])
                sizes = [(image.width, image.height) for result in results for image in result.images]
                self.stats.batch_ran(len(specs), results[0].timings, sizes)
                outcomes.update({job.id: Generated(result) for (job, _), result in zip(ready, results)})
        except JobCancelled:
            log.info("batch %s stopped: cancelled or no longer leased to %s", [j.id for j in batch.jobs],
                     self.id)  # fmt: skip
            decide_unfinished(outcomes, EndedElsewhere())
        except Exception as exc:
            if is_device_fatal(exc):
                self.stop()  # leave the jobs to their leases: another worker, on a sound device, runs them
                outcomes.update(dict.fromkeys(outcomes, LeftToLease()))
                raise FatalWorkerError(str(exc)) from exc
            log.exception("batch %s failed", [j.id for j in batch.jobs])
            decide_unfinished(outcomes, Failed(JobError.generation_failed(exc)))
        finally:
            self.stats.busy = 0

    def prepare_inputs(self, batch: Batch, outcomes: dict[str, Outcome]) -> list[tuple[Job, Any]]:
        """Each job with its input image (Redux: fetched already); a job whose image_url is unusable fails
        alone with a 422, and one cancelled while its image was fetched is not run."""
        ready = []
        for job in batch.jobs:
            fetched = batch.images.get(job.id)
            if fetched is None:
                ready.append((job, None))
                continue
            try:
                image = fetched.result()  # done: raises what the fetch raised
            except ImageInputError as exc:
                log.info("job %s: unusable image_url: %s", job.id, exc)
                outcomes[job.id] = Failed(JobError.bad_image_url(str(exc)))
                continue
            if self.is_ours(job):
                ready.append((job, image))
            else:
                outcomes[job.id] = EndedElsewhere()
        return ready

    def is_ours(self, job: Job) -> bool:
        """Still running on this worker: not cancelled, nor requeued to another after its lease lapsed."""
        current = self.store.get(job.id)
        return current is not None and current.status is JobStatus.RUNNING and current.worker_id == self.id

    def input_image(self, job: Job) -> Any:
        """Redux's input image, fetched and decoded on a fetch thread, outside the engine; nothing fetched is
        kept."""
        if job.spec.image_url is None:
            return None
        if self.images is None:
            raise ImageInputError("cannot be fetched: this worker has no image fetcher configured")
        self.log(job, "fetch image")
        return self.images.load(job.spec.image_url, job.spec.base_url)

    def deliver(self, batch: Batch) -> None:
        """On the delivery thread: each job's images encoded and stored, and its one end written."""
        try:
            for job in batch.jobs:
                self.record(job, batch.outcomes[job.id])
        finally:
            batch.keeper.stop()
            self.report()

    def record(self, job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, LeftToLease):
            return
        output, error, blob_keys = None, UNFINISHED.error, []
        try:
            if isinstance(outcome, Generated):
                self.log(job, "store")
                output, error = self.build_output(job.spec, outcome.result, blob_keys), None
            else:
                error = outcome.error if isinstance(outcome, Failed) else None
        except Exception as exc:
            log.exception("job %s: its images could not be encoded or stored", job.id)
            error = JobError.generation_failed(exc)
        finally:
            self.finish(job, output, blob_keys, error)

    def finish(
        self, job: Job, output: dict[str, Any] | None, blob_keys: list[str], error: JobError | None
    ) -> str:
        """Write the job's end; return how it ended (for the metrics)."""
        status = self.write_end(job, output, blob_keys, error)
        if status != "completed":
            for key in blob_keys:  # images of a job that did not complete with them belong to no one
                self.blobs.delete(key)
        self.stats.job_ended(status, *self.latencies(job))
        return status

    def write_end(
        self, job: Job, output: dict[str, Any] | None, blob_keys: list[str], error: JobError | None
    ) -> str:
        if output is not None and self.store.complete(job.id, output, blob_keys):
            return "completed"
        if output is None and error is not None and self.store.fail(job.id, error):
            return "failed"
        current = self.store.get(job.id)
        ours = current is not None and current.output is not None and current.worker_id == self.id
        if output is not None and ours:
            return "completed"  # our completion landed (its reply lost to a store restart)
        # The job ended some other way meanwhile (cancelled).
        return current.status.value if current is not None else "cancelled"

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


def needs_fetch(job: Job) -> bool:
    """A Redux job: its image_url is fetched before it can run."""
    return job.spec.image_url is not None


def decide_unfinished(outcomes: dict[str, Outcome], outcome: Outcome) -> None:
    """Jobs the engine call ended before deciding get `outcome`; those decided already (a bad image_url) keep
    theirs."""
    for job_id, current in outcomes.items():
        if current is UNFINISHED:
            outcomes[job_id] = outcome


def start_lines(worker_id: str, info: dict[str, Any]) -> list[str]:
    """The start log: what each level runs with, what is skipped and why, and where the worker runs."""
    lines = [f"worker {worker_id} level {level} runs with: {', '.join(names) or 'no switches'}"
             for level, names in (info.get("levels") or {}).items()]  # fmt: skip
    skipped = info.get("skipped") or {}
    lines += [f"worker {worker_id} skips {name}: {reason}" for name, reason in skipped.items()]
    for level, reasons in (info.get("dropped") or {}).items():
        lines += [f"worker {worker_id} level {level} dropped {name}: {why}" for name, why in reasons.items()]
    gpu, device = info.get("gpu"), info.get("device")
    if gpu is not None:
        where = f" on GPU {gpu}" + (f" ({device})" if device else "")
    else:
        where = f" on {device}" if device else ""
    return [*lines, f"worker {worker_id} ready{where}"]
