"""Waiting for a job: wake waiting requests (sync runs, status streams) as soon as their job changes, instead
of polling on a timer.

One thread per API process blocks on the store's change signal (a Unix socket doorbell for SQLite, pub/sub for
Redis), which names the jobs that changed (store/changes.py), and wakes on the event loop only the waiters
watching those jobs (those following a job's log lines also when only its log grew), plus those watching for
any change; waiters then re-read their job. A missed signal only costs the fallback timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fluxserve.api import job_calls
from fluxserve.core.jobs import Job
from fluxserve.store.changes import Changes
from fluxserve.store.protocols import JobQueue

if TYPE_CHECKING:
    from fluxserve.api.deps import Services


class Watch:
    """A waiter's subscription: a change that arrives while the waiter re-reads is kept for its next wait."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    @property
    def woken(self) -> bool:
        """A change came that the next wait returns at once for."""
        return self._event.is_set()

    async def next(self, timeout_s: float) -> bool:
        """Return at the next change (at once if one came since the last call), or after timeout_s: True when
        woken by a change."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class ChangeFeed:
    def __init__(self, store: JobQueue) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (job id, follows its logs) -> its waiters; (None, False): woken by any change. Event loop only.
        self._watches: dict[tuple[str | None, bool], set[Watch]] = {}

    @contextlib.contextmanager
    def watch(self, job_id: str | None = None, logs: bool = False) -> Iterator[Watch]:
        """Changes to one job from now on, its new log lines too when `logs` (job_id None: any change)."""
        if self._thread is None:
            self._start(asyncio.get_running_loop())
        watch, key = Watch(), (job_id, logs and job_id is not None)
        self._watches.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            group = self._watches.get(key, set())
            group.discard(watch)
            if not group:
                self._watches.pop(key, None)

    async def wait(self, timeout_s: float, job_id: str | None = None, logs: bool = False) -> None:
        """Return at the next change to job_id (None: anywhere in the store), or after timeout_s."""
        with self.watch(job_id, logs) as watch:
            await watch.next(timeout_s)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            heard = self.store.wait_for_change(0.5)
            if heard and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._fire, heard)

    def _fire(self, heard: Changes) -> None:
        """The one place that decides who a change wakes."""
        if heard.every_job:
            woken = list(self._watches)
        else:
            woken = [(None, False), *((job_id, logs) for job_id in heard.jobs for logs in (False, True)),
                     *((job_id, True) for job_id in heard.logs)]  # fmt: skip
        for key in woken:
            for watch in self._watches.get(key, ()):
                watch.notify()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


async def wait_for_terminal(svc: Services, job_id: str, abandoned: asyncio.Event | None = None) -> Job | None:
    """Re-read the job whenever it changes (or every poll_interval_s at worst) until it ends.
    None once `abandoned` is set: nobody waits for the answer any more (the client hung up)."""
    with svc.changes.watch(job_id) as changes:
        while True:
            job = await job_calls.read_job(svc, job_id)
            if job is not None and job.status.terminal:
                return job
            if abandoned is not None and abandoned.is_set():
                return None
            await changes.next(svc.waiting.poll_interval_s)
