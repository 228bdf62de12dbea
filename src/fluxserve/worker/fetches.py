"""Redux jobs' image_url fetched off the GPU thread: a slow server may hold a fetch for its whole timeout, and
the engine runs other jobs meanwhile. A job whose image arrived runs in a later engine call."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass
from typing import Any, Callable

from fluxserve.core.jobs import Job
from fluxserve.worker.batch import LeaseKeeper


def needs_fetch(job: Job) -> bool:
    """A Redux job: its image_url is fetched before it can run."""
    return job.spec.image_url is not None


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
