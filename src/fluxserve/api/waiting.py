"""Wake waiting requests (sync runs, status streams) as soon as the store changes, instead of polling on a timer.

One thread per API process blocks on the store's change signal (a Unix socket doorbell for SQLite, pub/sub for
Redis) and wakes every waiter on the event loop; waiters then re-read their job. A missed signal only costs the
fallback timeout.
"""

from __future__ import annotations

import asyncio
import threading

from fluxserve.store.protocols import JobStore


class ChangeFeed:
    def __init__(self, store: JobStore) -> None:
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
