"""The SQLite store's connections: another process holding the database costs one operation at most.

- Writes go through one connection per store, one transaction at a time. `BEGIN IMMEDIATE` takes the write
  lock up front; when another process holds it longer than SQLite's busy timeout, the begin is retried with
  backoff (the thread lock released while sleeping) until a budget runs out, and then that one operation
  raises StoreBusy. A lock shorter than the budget is simply waited out; a longer one fails one operation.
- Reads run on a connection of their own per thread and take no process-wide lock: in WAL mode a reader sees
  the last commit and never waits for a writer, so status, result, /ready and /metrics answer during a
  foreign write. Several reads that must agree (a status: job, position, logs) share one read transaction.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from fluxserve.core.errors import StoreBusy

# SQLite's own wait for a lock within one try. Short enough that the retry loop (which releases this process's
# write lock between tries) stays in charge; long enough that an ordinary contended write never retries.
BUSY_TIMEOUT_S = 5.0
# How long an operation keeps retrying a locked database before it fails on its own. Longer than any
# transaction fluxserve itself runs, so only a foreign lock (a backup, the sqlite3 shell) ever exhausts it.
RETRY_BUDGET_S = 60.0
FIRST_BACKOFF_S = 0.01
MAX_BACKOFF_S = 0.5
# SQLITE_BUSY and SQLITE_LOCKED: someone else holds the lock; every other error is a real one.
LOCK_ERROR_CODES = (5, 6)

T = TypeVar("T")


def is_lock_error(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in LOCK_ERROR_CODES  # extended codes (SQLITE_BUSY_SNAPSHOT): base in the low byte
    message = str(exc)
    return "database is locked" in message or "database is busy" in message


class Connections:
    def __init__(
        self,
        path: Path,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        retry_budget_s: float = RETRY_BUDGET_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path, self.busy_timeout_s, self.retry_budget_s = path, busy_timeout_s, retry_budget_s
        self._sleep = sleep
        self._write_lock = threading.Lock()
        self._readers = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()  # guards _all: taken when a thread opens its reader, never per read
        self.writer = self._connect()
        self.retrying(lambda: self.writer.execute("PRAGMA journal_mode=WAL"))
        self.writer.execute("PRAGMA synchronous=NORMAL")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_s
        )
        with self._all_lock:
            self._all.append(db)
        return db

    def retrying(self, operation: Callable[[], T], what: str = "write") -> T:
        """operation(), tried again with backoff while the database is locked; StoreBusy once the budget is
        spent."""
        deadline = time.monotonic() + self.retry_budget_s
        delay = FIRST_BACKOFF_S
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not is_lock_error(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    message = f"{what}: the job store stayed locked for {self.retry_budget_s:g} s"
                    raise StoreBusy(message) from exc
            # Jitter: writers in several processes that all waited on one lock do not retry in lockstep.
            self._sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, MAX_BACKOFF_S)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection, begun with retries (see the module docstring)."""
        self.retrying(self._begin)
        try:
            yield self.writer
            self.writer.execute("COMMIT")
        except BaseException:
            if self.writer.in_transaction:
                self.writer.execute("ROLLBACK")
            raise
        finally:
            self._write_lock.release()

    def _begin(self) -> None:
        # The thread lock is held only while this process's own transaction runs or waits on SQLite's busy
        # handler, and released between retries, so other writers here get their turn.
        self._write_lock.acquire()
        try:
            self.writer.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise

    def read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        db = self._reader()
        return self.retrying(lambda: db.execute(sql, tuple(args)).fetchall(), what="read")

    def read_together(self, reads: Callable[[sqlite3.Connection], T]) -> T:
        """reads(db) inside one read transaction on this thread's reader: every statement it runs sees the
        same commit (WAL: a snapshot, taken without waiting for any writer)."""
        db = self._reader()

        def once() -> T:
            db.execute("BEGIN")
            try:
                return reads(db)
            finally:
                db.execute("ROLLBACK")  # nothing to commit in a read transaction: this only ends the snapshot

        return self.retrying(once, what="read")

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = self._connect()
            db.execute("PRAGMA query_only=1")  # a reader that tried to write would be a bug: make it loud
        return db

    def close(self) -> None:
        with self._write_lock, self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
