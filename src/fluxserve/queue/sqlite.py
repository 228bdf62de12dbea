"""The embedded job store: one SQLite file in WAL mode, safe across threads and processes.

Every state change is a conditional UPDATE whose WHERE clause comes from jobs.TRANSITIONS, so a cancel racing
a completion can never leave a job in two states: exactly one UPDATE matches.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from fluxserve.jobs import TRANSITIONS, GenerationSpec, Job, JobError, JobStatus, LogLine

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    output TEXT,
    error TEXT,
    worker_id TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id);
"""

COLUMNS = "id, app, spec, status, created_at, started_at, finished_at, output, error, worker_id, lease_until"


class SQLiteJobStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def open(cls, path: Path, clock: Callable[[], float] = time.time) -> SQLiteJobStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, clock)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq < j.seq)"
                " FROM jobs AS j WHERE j.id = ? AND j.status = 'queued'",
                (job_id,),
            ).fetchone()
        return row[0] if row else None

    def logs(self, job_id: str) -> list[LogLine]:
        with self._lock:
            rows = self._db.execute(
                "SELECT message, ts, level FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,)
            ).fetchall()
        return [LogLine(message=m, timestamp=ts, level=level) for m, ts, level in rows]

    # -- writes --------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, app, spec, status, created_at) VALUES (?, ?, ?, ?, ?)",
                (job.id, job.app, json.dumps(job.spec.to_dict()), JobStatus.QUEUED.value, job.created_at),
            )

    def claim(self, worker_id: str, lease_s: float) -> Job | None:
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
                ).fetchone()
                if row:
                    self._transition_locked(
                        row[0], JobStatus.RUNNING, started_at=now, worker_id=worker_id, lease_until=now + lease_s
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(row[0]) if row else None

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND worker_id = ? AND status = 'running'",
                (self._clock() + lease_s, job_id, worker_id),
            )
        return cur.rowcount == 1

    def requeue_expired(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status = 'running' AND lease_until < ?", (self._clock(),)
            ).fetchall()
            return [
                job_id
                for (job_id,) in rows
                if self._transition_locked(job_id, JobStatus.QUEUED, worker_id=None, lease_until=None)
            ]

    def complete(self, job_id: str, output: dict[str, Any]) -> bool:
        return self._transition(job_id, JobStatus.COMPLETED, output=json.dumps(output))

    def fail(self, job_id: str, error: JobError) -> bool:
        return self._transition(job_id, JobStatus.FAILED, error=json.dumps(error.to_dict()))

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED)

    def append_log(self, job_id: str, line: LogLine) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO job_logs (job_id, ts, level, message) VALUES (?, ?, ?, ?)",
                (job_id, line.timestamp, line.level, line.message),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the one place a status changes -------------------------------------------------------------

    def _transition(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        with self._lock:
            return self._transition_locked(job_id, target, **fields)

    def _transition_locked(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        if target.terminal:
            fields["finished_at"] = self._clock()
        sources = sorted(s.value for s in TRANSITIONS[target])
        assignments = ", ".join(f"{name} = ?" for name in ["status", *fields])
        placeholders = ", ".join("?" for _ in sources)
        cur = self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN ({placeholders})",
            (target.value, *fields.values(), job_id, *sources),
        )
        return cur.rowcount == 1


def _row_to_job(row: tuple) -> Job:
    job_id, app, spec, status, created, started, finished, output, error, worker_id, lease_until = row
    return Job(
        id=job_id,
        app=app,
        spec=GenerationSpec.from_dict(json.loads(spec)),
        status=JobStatus(status),
        created_at=created,
        started_at=started,
        finished_at=finished,
        output=json.loads(output) if output else None,
        error=JobError.from_dict(json.loads(error)) if error else None,
        worker_id=worker_id,
        lease_until=lease_until,
    )
