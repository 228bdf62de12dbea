"""One engine call's jobs: their leases, the progress the engine reports for them, and each job's outcome.

The loop decides each job's outcome once (Batch.decide); the delivery thread records it once, from `finally`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from fluxserve.core.errors import JobCancelled, StoreBusy
from fluxserve.core.jobs import PREVIEW_LEVEL, Job, JobError, LogLine, step_message
from fluxserve.provenance.manifest import Ingredient
from fluxserve.store.protocols import JobQueue
from fluxserve.worker.log_writer import LogWriter

if TYPE_CHECKING:  # the type only: the worker never loads the engine package itself
    from fluxserve.engine.protocol import Generated

log = logging.getLogger(__name__)


# -- what happened to each job, decided by the loop and recorded by the delivery thread ------------------


@dataclass(frozen=True)
class Completed:
    """Its images exist; recording encodes and stores them, then completes the job."""

    result: Generated


@dataclass(frozen=True)
class Failed:
    error: JobError


@dataclass(frozen=True)
class Cancelled:
    """Cancelled, or requeued to another worker after its lease lapsed: the store already holds its end."""


@dataclass(frozen=True)
class LeftToLease:
    """The device is suspect: no end is written; the lease runs out and another worker runs the job."""


JobOutcome = Completed | Failed | Cancelled | LeftToLease
# The end of a job whose outcome was never decided, or whose images were never stored: the worker was
# interrupted (not by an Exception) in between.
WORKER_STOPPED = Failed(JobError(500, "internal_error", "The worker stopped before finishing"))


class LeaseKeeper:
    """Renews a batch's leases in the background, however long a single step or its delivery takes."""

    def __init__(self, store: JobQueue, job_ids: list[str], worker_id: str, lease_s: float) -> None:
        self.store, self.job_ids, self.worker_id, self.lease_s = store, job_ids, worker_id, lease_s
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
        while not self._done.wait(self.lease_s / 3):
            for job_id in self.job_ids:  # a job cancelled or requeued meanwhile is noticed at the next step
                try:
                    self.store.renew_lease(job_id, self.worker_id, self.lease_s)
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
    # Redux jobs' input images, fetched before the batch was formed: the InputImage, or the fetch's error.
    images: dict[str, Future[Any]] = field(default_factory=dict)
    # The inputs of the Redux jobs that ran, by job id: their manifests' ingredients (provenance.manifest).
    ingredients: dict[str, Ingredient] = field(default_factory=dict)
    # Log lines of the stages after the last step, not yet written: they ride with the job's end (record).
    unwritten: list[tuple[str, LogLine]] = field(default_factory=list)
    _outcomes: dict[str, JobOutcome] = field(default_factory=dict, init=False)

    def decide(self, job: Job, outcome: JobOutcome) -> None:
        """A job's outcome is decided once: the first decision stands (a bad image_url stays a 422 when the
        engine call then fails the rest)."""
        self._outcomes.setdefault(job.id, outcome)

    def decide_rest(self, outcome: JobOutcome) -> None:
        for job in self.jobs:
            self.decide(job, outcome)

    def outcome(self, job: Job) -> JobOutcome:
        return self._outcomes.get(job.id, WORKER_STOPPED)

    def unwritten_logs(self, job: Job) -> list[LogLine]:
        return [line for job_id, line in self.unwritten if job_id == job.id]


# How often, at most, the engine asks the store whether its jobs are still its own (cancelled, or requeued
# after a lapsed lease). Each ask is a store read per job on the engine's thread: asking at every stage and
# step cost a 20 ms sync run 3 ms. A GPU step (60-250 ms at 1024²) is longer than this, so a cancel still
# stops the batch at its next step there; a cancel is noticed within max(one step, this interval).
CHECK_INTERVAL_S = 0.05


class BatchProgress:
    """The engine's Progress for a batch: log lines to each job, and stop once none of them is ours any more
    (a job cancelled alone in a batch of several is dropped when the batch ends).

    At most one store write per step for the whole batch, made off the engine's thread (worker.log_writer): a
    stage's lines (stamped when it starts) wait for the next step's write, and those after the last step, with
    any the writer had not written yet, stay in `unwritten` for the job's end to carry (the delivery writes
    them with its "store" line), so a job's logs end the same, in one write less per stage."""

    def __init__(
        self,
        jobs: list[Job],
        write_logs: Callable[[list[tuple[str, LogLine]]], None],
        is_ours: Callable[[Job], bool],
        clock: Callable[[], float],
        check_interval_s: float = CHECK_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """jobs: those of the engine call, in the order of its specs (the rows of `previews` follow it); they
        were claimed just now, which counts as the first check."""
        self.jobs, self.is_ours, self.clock = jobs, is_ours, clock
        self.check_interval_s, self.monotonic = check_interval_s, monotonic
        self._checked_at = monotonic()
        self._writer = LogWriter(write_logs)
        self.unwritten: list[tuple[str, LogLine]] = []
        # Each job's image rows in the engine's batch, fixed at the start (self.jobs shrinks on cancels).
        self.rows, at = {}, 0
        for job in jobs:
            self.rows[job.id] = range(at, at + job.spec.num_images)
            at += job.spec.num_images

    def stage(self, name: str) -> None:
        self.check_still_ours()
        self._add(name)

    def step(self, step: int, total: int, previews: list[str] | None = None) -> None:
        now = self.clock()
        for job in self.jobs:
            if previews is not None and job.spec.previews:  # before the step line: /stream sends them as one
                for row in self.rows[job.id]:
                    preview = LogLine(message=previews[row], timestamp=now, level=PREVIEW_LEVEL)
                    self.unwritten.append((job.id, preview))
            self.unwritten.append((job.id, LogLine(message=step_message(step, total), timestamp=now)))
        lines, self.unwritten = self.unwritten, []
        self._writer.put(lines)
        if step < total:
            self.check_still_ours()

    def finish(self) -> list[tuple[str, LogLine]]:
        """Once the engine call is over: the lines not written yet, in order (the writer's, then the last
        stages'), for the jobs' ends to carry. Waits for the write in flight only."""
        self.unwritten = self._writer.close() + self.unwritten
        return self.unwritten

    def _add(self, message: str) -> None:
        now = self.clock()
        self.unwritten += [(job.id, LogLine(message=message, timestamp=now)) for job in self.jobs]

    def check_still_ours(self) -> None:
        now = self.monotonic()
        if now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        self.jobs = [job for job in self.jobs if self.is_ours(job)]
        if not self.jobs:
            raise JobCancelled("every job of the batch was cancelled")
