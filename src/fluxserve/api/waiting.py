"""Waiting for a job: wake waiting requests (sync runs, status streams) as soon as the store changes, instead of
polling on a timer.

One thread per API process blocks on the store's change signal (a Unix socket doorbell for SQLite, pub/sub for
Redis) and wakes every waiter on the event loop; waiters then re-read their job. A missed signal only costs the
fallback timeout.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from fluxserve.core.jobs import Job
from fluxserve.store.protocols import JobQueue

if TYPE_CHECKING:
    from fluxserve.api.deps import Services


class ChangeFeed:
    def __init__(self, store: JobQueue) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    async def wait(self, timeout_s: float) -> None:
        """Return at the next change anywhere in the store, or after timeout_s."""
        if self._thread is None:
            self._start(asyncio.get_running_loop())
        assert self._event is not None
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            pass

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._event = loop, asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.store.wait_for_change(0.5) and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


async def wait_for_terminal(svc: Services, job_id: str, abandoned: asyncio.Event | None = None) -> Job | None:
    """Re-read the job whenever the store changes (or every poll_interval_s at worst) until it ends.
    None once `abandoned` is set: nobody waits for the answer any more (the client hung up)."""
    while True:
        job = await run_in_threadpool(svc.store.get, job_id)
        if job is not None and job.status.terminal:
            return job
        if abandoned is not None and abandoned.is_set():
            return None
        await svc.changes.wait(svc.waiting.poll_interval_s)
