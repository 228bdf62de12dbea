"""The worker: claim jobs, run them on the engine, store their images, write each job's one terminal state.

Decide, execute, record (as vLLM's engine step): the store's claim decides which jobs run together; one engine
call executes them and decides each job's outcome (worker/batch.py); the delivery thread records it.
Two threads share a batch's life, so the GPU never waits on JPEG encoding or the blob store:
- this loop claims batch N+1 and runs it on the engine;
- meanwhile a delivery thread encodes and stores batch N's images and writes each of its jobs' end.
At most one batch waits to be delivered: handing over the next waits for the previous delivery to end.
Nor does the GPU wait on a Redux job's image_url (a slow server may hold it for the whole fetch timeout):
a claimed Redux job is fetched on a small pool of fetch threads (worker/fetches.py) while the loop runs other
jobs; once its image arrives it runs in a later engine call. While `fetch_concurrency` fetches are pending the
loop claims nothing more, so it never takes more jobs ahead than it can fetch at once.

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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from fluxserve.blobs.base import BlobStore
from fluxserve.core.errors import JobCancelled, StoreBusy, is_device_fatal
from fluxserve.core.jobs import Job, JobError, JobStatus, LogLine
from fluxserve.core.settings import LeaseSettings, Settings, WarmupSettings, WorkerSettings
from fluxserve.core.worker_state import WorkerState
from fluxserve.net.image_inputs import ImageFetcher, ImageInputError, InputImage
from fluxserve.provenance.manifest import Ingredient
from fluxserve.provenance.stamp import Provenance
from fluxserve.store import scheduling
from fluxserve.store.protocols import JobStore
from fluxserve.store.scheduling import ClaimPolicy
from fluxserve.worker.batch import (
    WORKER_STOPPED,
    Batch,
    BatchProgress,
    Cancelled,
    Completed,
    Failed,
    JobOutcome,
    LeaseKeeper,
    LeaseKeepers,
    LeftToLease,
)
from fluxserve.worker.delivery import Deliveries
from fluxserve.worker.fetches import Fetch, Fetches, needs_fetch
from fluxserve.worker.outputs import build_output
from fluxserve.worker.stats import WorkerStats

if TYPE_CHECKING:  # the type only: the worker is handed its engine (processes/), it never loads one
    from fluxserve.engine.protocol import Engine

log = logging.getLogger(__name__)

# A worker that has not reported for this long no longer counts towards readiness.
STATE_TTL_S = 15.0
# While images are being fetched, the idle loop looks for an arrived one at least this often: the store's
# change signal (which wakes it for a submit) knows nothing of fetch threads.
FETCH_POLL_S = 0.05


class FatalWorkerError(Exception):
    """The process is suspect: stop claiming, leave the job to its lease."""


@dataclass
class WorkerConfig:
    """What one worker needs of Settings; each default is the setting's own (one default per value)."""

    worker_id: str = Settings.worker_id
    # The GPU this worker runs on, as the operator knows it (nvidia-smi's index or a UUID); None: not pinned.
    gpu: str | None = Settings.gpu
    lease_s: float = LeaseSettings.lease_s
    max_attempts: int = LeaseSettings.max_attempts
    # Longest idle wait between looks at the queue; a submission wakes the worker sooner.
    idle_sleep_s: float = 0.5
    # Cross-request batching: up to max_batch compatible jobs per pipeline call, gathered for at most
    # batch_window_s after the first one is claimed (acceleration=none jobs always run alone).
    max_batch: int = WorkerSettings.max_batch
    batch_window_s: float = WorkerSettings.batch_window_s
    # Fair sharing: a key with this many running jobs waits while other keys' jobs run (0: no limit).
    max_per_key: int = WorkerSettings.max_running_per_key
    # image_url fetches run at once, off the GPU thread; while this many are pending nothing more is claimed.
    fetch_concurrency: int = Settings.fetch_concurrency

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerConfig:
        leases, worker = settings.leases, settings.worker
        fields = dict(worker_id=settings.worker_id, gpu=settings.gpu, lease_s=leases.lease_s,
                      max_attempts=leases.max_attempts, max_batch=worker.max_batch,
                      batch_window_s=worker.batch_window_s, max_per_key=worker.max_running_per_key,
                      fetch_concurrency=settings.fetch_concurrency)  # fmt: skip
        return cls(**{**fields, **overrides})


class Worker:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        engine: Engine,
        config: WorkerConfig | None = None,
        clock: Callable[[], float] = time.time,
        images: ImageFetcher | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        """provenance: the marks its images carry (processes/ builds them from settings); None: every mark,
        signed by a development CA held in memory."""
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.images = images
        self.provenance = provenance or Provenance.in_memory()
        self.config = config or WorkerConfig()
        self.clock = clock
        self._stop = threading.Event()
        self._report_lock = threading.Lock()
        self._state = WorkerState.READY
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
                self.report(WorkerState.WARMING)
                self.engine.warm_up(warmup)
                self.stats.info = self.describe()  # a switch that failed to warm up is no longer run
            self.report(WorkerState.READY)
            self.log_start()
            # Once stopped, claim nothing more but run the jobs whose images are still being fetched.
            while not self._stop.is_set() or self.fetches.pending:
                try:
                    if not self.run_once():
                        self.wait_for_work()
                    self.report(WorkerState.READY, throttle=True)
                except StoreBusy:
                    # Another process kept the store locked past its retry budget: that one operation failed (a
                    # job it left claimed is requeued when its lease runs out). The loaded model is kept.
                    log.warning("worker %s: the job store stayed locked; trying again", self.id, exc_info=True)
        finally:
            self.fetches.abandon()  # jobs are left pending only when going down on an error
            self.drain()
        self.report(WorkerState.STOPPING)
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
        account of its device and of the switches each level runs with."""
        return {"gpu": self.config.gpu, **self.engine.describe()}

    def report(self, state: WorkerState | None = None, throttle: bool = False) -> None:
        """Tell the store (and so /ready) what this worker is doing (None: the same as last time); refreshed
        well within its ttl. Both threads report; the lock makes the last write carry the latest numbers."""
        with self._report_lock:
            now = time.monotonic()
            if throttle and now - self._reported_at < STATE_TTL_S / 3:
                return
            self._state, self._reported_at = state or self._state, now
            self.stats.gpu_memory_bytes = self.engine.gpu_memory_bytes()
            self.store.report_worker(self.id, self._state.value, STATE_TTL_S, self.stats.snapshot())

    def report_soon(self) -> None:
        """report(), on a thread of its own, for the engine's thread never to wait for the store's write (a
        round trip, an fsync on a durable store). The numbers are read when the write happens, so a write
        that lands after a later one still carries the latest."""

        def write() -> None:
            try:
                self.report()
            except Exception:  # the next report, or the heartbeat, says it again
                log.warning("worker state not reported", exc_info=True)

        threading.Thread(target=write, name="report", daemon=True).start()

    def stop(self) -> None:
        """Idempotent, and never blocks (a signal handler calls it): the loop finishes the batch in flight and
        the jobs whose images are being fetched (within the fetch timeout), waits for their delivery, then
        reports that it is stopping."""
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
        # Redux batch-mates each need a fetch: the batch holds no more of them than there are free fetch threads.
        policy = ClaimPolicy(self.config.max_batch, self.config.max_per_key, max_fetches=self.fetches.free)
        jobs = self.gather(policy)
        if not jobs:
            return False
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

    def gather(self, policy: ClaimPolicy) -> list[Job]:
        """Claim a batch under `policy`; while it has room, fill it with compatible jobs queued within
        batch_window_s of the first claim (the same decision, limited to the first job's batch key)."""
        jobs = self.store.claim(self.id, self.config.lease_s, policy)
        key = scheduling.batch_key(jobs[0].spec) if jobs else None
        deadline = time.monotonic() + self.config.batch_window_s
        while key is not None and len(jobs) < policy.max_batch and time.monotonic() < deadline:
            time.sleep(min(0.002, self.config.batch_window_s))
            fetches = None if policy.max_fetches is None else policy.max_fetches - sum(map(needs_fetch, jobs))
            rest = replace(policy, max_batch=policy.max_batch - len(jobs), max_fetches=fetches, batch_key=key)
            jobs += self.store.claim(self.id, self.config.lease_s, rest)
        return jobs

    # -- one batch: executed here, delivered on the delivery thread ---------------------------------

    def lease_keeper(self, jobs: list[Job]) -> LeaseKeeper:
        return LeaseKeeper(self.store, [job.id for job in jobs], self.id, self.config.lease_s).start()

    def process(self, jobs: list[Job]) -> None:
        """Run the batch on the engine, then hand it over for delivery, which writes every job's end."""
        self.run_batch(Batch(jobs, self.lease_keeper(jobs)))

    def start_fetch(self, job: Job) -> None:
        """Fetch the job's image on a fetch thread, its lease renewed until its batch is delivered."""
        keeper = self.lease_keeper([job])
        try:
            self.fetches.start(job, keeper)
        except BaseException:
            keeper.stop()  # not started: the job is left to its lease
            raise

    def process_fetched(self, fetched: list[Fetch]) -> None:
        """Jobs whose fetch ended, as one batch (leased by the keepers of their fetches)."""
        jobs = [fetch.job for fetch in fetched]
        keeper = LeaseKeepers([fetch.keeper for fetch in fetched])
        self.run_batch(Batch(jobs, keeper, {fetch.job.id: fetch.image for fetch in fetched}))

    def run_batch(self, batch: Batch) -> None:
        try:
            self.execute(batch)
        finally:
            self.deliveries.hand_off(batch)

    def execute(self, batch: Batch) -> None:
        """One engine call decides each job's outcome; a suspect device leaves them all to their leases."""
        self.stats.busy = 1
        self.report_soon()  # busy (the state is READY already: a late write must not undo a STOPPING)
        try:
            ready = self.prepare_inputs(batch)
            if ready:
                specs = [job.spec for job, _ in ready]
                # The engine call's jobs, in its row order (one whose image fetch failed is already decided).
                jobs = [job for job, _ in ready]
                progress = BatchProgress(jobs, self.store.append_logs, self.is_ours, self.clock)
                try:
                    results = self.engine.generate_batch(specs, progress, [image for _, image in ready])
                finally:
                    batch.unwritten = progress.finish()
                sizes = [(image.width, image.height) for result in results for image in result.images]
                self.stats.batch_ran(len(specs), results[0].timings, sizes)
                for (job, _), result in zip(ready, results):
                    batch.decide(job, Completed(result))
        except JobCancelled:
            log.info("batch %s stopped: cancelled or no longer leased to %s", [j.id for j in batch.jobs],
                     self.id)  # fmt: skip
            batch.decide_rest(Cancelled())
        except Exception as exc:
            if is_device_fatal(exc):
                self.stop()  # leave the jobs to their leases: another worker, on a sound device, runs them
                batch.decide_rest(LeftToLease())
                raise FatalWorkerError(str(exc)) from exc
            log.exception("batch %s failed", [j.id for j in batch.jobs])
            batch.decide_rest(Failed(JobError.generation_failed(exc)))
        finally:
            self.stats.busy = 0

    def prepare_inputs(self, batch: Batch) -> list[tuple[Job, Any]]:
        """Each job with its input image (Redux: fetched already); a job whose image_url is unusable fails
        alone with a 422, and one cancelled while its image was fetched is not run."""
        ready = []
        for job in batch.jobs:
            fetched = batch.images.get(job.id)
            if fetched is None:
                ready.append((job, None))
                continue
            try:
                fetched_image: InputImage = fetched.result()  # done: raises what the fetch raised
            except ImageInputError as exc:
                log.info("job %s: unusable image_url: %s", job.id, exc)
                batch.decide(job, Failed(JobError.bad_image_url(str(exc))))
                continue
            if self.is_ours(job):
                ready.append((job, fetched_image.image))
                batch.ingredients[job.id] = Ingredient(fetched_image.data, fetched_image.content_type,
                                                       fetched_image.image)  # fmt: skip
            else:
                batch.decide(job, Cancelled())
        return ready

    def is_ours(self, job: Job) -> bool:
        """Still running on this worker: not cancelled, nor requeued to another after its lease lapsed."""
        current = self.store.get(job.id)
        return current is not None and current.status is JobStatus.RUNNING and current.worker_id == self.id

    def input_image(self, job: Job) -> InputImage | None:
        """Redux's input image, fetched and decoded on a fetch thread, outside the engine; its bytes are kept
        until its job is delivered, for the C2PA manifest to record them as its ingredient."""
        if job.spec.image_url is None:
            return None
        if self.images is None:
            raise ImageInputError("cannot be fetched: this worker has no image fetcher configured")
        self.log(job, "fetch image")
        return self.images.load(job.spec.image_url, job.spec.base_url)

    # -- record: on the delivery thread --------------------------------------------------------------

    def deliver(self, batch: Batch) -> None:
        """Each job's images marked, encoded and stored, and its one end written."""
        try:
            for job in batch.jobs:
                self.record(job, batch.outcome(job), batch.unwritten_logs(job), batch.ingredients.get(job.id))
        finally:
            batch.keeper.stop()
            self.report()

    def record(
        self, job: Job, outcome: JobOutcome, unwritten: list[LogLine] | None = None,
        ingredient: Ingredient | None = None,
    ) -> None:  # fmt: skip
        """Write the job's one end from `finally`: storing its images may itself fail, and then it fails.
        `unwritten`: its last stages' log lines, written before its end (with the "store" line when it
        completed: one write). `ingredient`: a Redux job's input, for its images' manifests."""
        unwritten = unwritten or []
        if not isinstance(outcome, Completed) and unwritten:
            try:  # only its log: losing it must not change how the job ends
                self.store.append_logs([(job.id, line) for line in unwritten])
            except Exception:
                log.warning("job %s: its last log lines could not be written", job.id, exc_info=True)
        if isinstance(outcome, LeftToLease):
            return
        output: dict[str, Any] | None = None
        error: JobError | None = WORKER_STOPPED.error  # the end if storing is interrupted
        blob_keys: list[str] = []
        try:
            if isinstance(outcome, Completed):
                self.store.append_logs([(job.id, line) for line in [*unwritten, self.log_line("store")]])
                output, error = build_output(job.spec, outcome.result, self.blobs, blob_keys, self.provenance,
                                             ingredient), None  # fmt: skip
            else:
                error = outcome.error if isinstance(outcome, Failed) else None
        except Exception as exc:
            log.exception("job %s: its images could not be encoded or stored", job.id)
            error = JobError.generation_failed(exc)
        finally:
            status = self.write_end(job, output, blob_keys, error)
            if status is not JobStatus.COMPLETED:
                for key in blob_keys:  # images of a job that did not complete with them belong to no one
                    self.blobs.delete(key)
            self.stats.job_ended(status.value, *self.latencies(job))

    def write_end(
        self, job: Job, output: dict[str, Any] | None, blob_keys: list[str], error: JobError | None
    ) -> JobStatus:
        """Complete or fail the job; how it ended, read back when it ended some other way meanwhile."""
        if output is not None and self.store.complete(job.id, output, blob_keys):
            return JobStatus.COMPLETED
        if output is None and error is not None and self.store.fail(job.id, error):
            return JobStatus.FAILED
        current = self.store.get(job.id)
        ours = current is not None and current.output is not None and current.worker_id == self.id
        if output is not None and ours:
            return JobStatus.COMPLETED  # our completion landed (its reply lost to a store restart)
        # The job ended some other way meanwhile (cancelled), or was deleted with its key.
        return current.status if current is not None else JobStatus.CANCELLED

    def latencies(self, job: Job) -> tuple[float | None, float]:
        """(queue wait, submit to end) in seconds."""
        wait = job.started_at - job.created_at if job.started_at else None
        return wait, self.clock() - job.created_at

    def log(self, job: Job, message: str, level: str = "INFO") -> None:
        self.store.append_log(job.id, self.log_line(message, level))

    def log_line(self, message: str, level: str = "INFO") -> LogLine:
        return LogLine(message=message, timestamp=self.clock(), level=level)


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
