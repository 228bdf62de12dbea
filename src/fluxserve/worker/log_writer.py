"""A batch's step log lines, written to the store by a thread of its own, so the engine never waits for it.

Each write is a store round trip (and an fsync on a durable Redis or SQLite): made on the engine's thread, a
20 ms, 4-step sync run waited 3-7 ms for them. Lines keep the order they were reported in; those reported
while a write is in flight go together in the next one. A failed write is not lost: its lines stay pending,
are retried, and whatever is still pending when the batch ends is handed back, for the job's end to carry
(worker.loop.Worker.record writes them before the job's end, as it writes the last stages' lines).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from fluxserve.core.jobs import LogLine

log = logging.getLogger(__name__)

Entries = list[tuple[str, LogLine]]

# Seconds before a failed write is tried again (the store is locked or restarting: not worth spinning on).
RETRY_S = 0.05


class LogWriter:
    def __init__(self, write_logs: Callable[[Entries], None]) -> None:
        self.write_logs = write_logs
        self._pending: Entries = []
        self._closing = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, entries: Entries) -> None:
        """Queue lines for writing; never waits for the store."""
        if not entries:
            return
        with self._changed:
            self._pending += entries
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._changed.notify()

    def close(self) -> Entries:
        """Wait for the write in flight, if any; the lines not written yet, in order (the caller writes them
        with the job's end, in one write less). Idempotent."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
        with self._changed:
            left, self._pending = self._pending, []
        return left

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if self._closing:
                    return  # the rest goes back to close()'s caller
                batch, self._pending = self._pending, []
            try:
                self.write_logs(batch)
                continue
            except Exception:  # the store's trouble: keep the lines, try again, never fail the job here
                log.warning("%d log lines not written yet; retrying", len(batch), exc_info=True)
            with self._changed:
                self._pending[:0] = batch
                self._changed.wait(RETRY_S)
