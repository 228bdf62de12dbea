"""The embedded job store: one SQLite file in WAL mode, safe across threads and processes.

Every state change is a conditional UPDATE whose WHERE clause comes from jobs.TRANSITIONS, so a cancel racing
a completion can never leave a job in two states: exactly one UPDATE matches.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from fluxserve.core.jobs import (
    TERMINAL,
    TRANSITIONS,
    ApiKey,
    GenerationSpec,
    Job,
    JobError,
    JobStatus,
    LogLine,
    WebhookDelivery,
    megapixels,
    usage_day,
)
from fluxserve.store import scheduling as fairness
from fluxserve.store.protocols import Admission, QueueFull, lost_attempt
from fluxserve.store.doorbell import Doorbell, doorbell_folder
from fluxserve.store.sqlite_connections import BUSY_TIMEOUT_S, RETRY_BUDGET_S, Connections

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
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    start_deadline REAL,
    gateway_request_id TEXT NOT NULL,
    webhook_url TEXT,
    blob_keys TEXT NOT NULL DEFAULT '[]',
    key_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_key_started ON jobs (key_id, started_at);
CREATE INDEX IF NOT EXISTS jobs_key_status ON jobs (key_id, status);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL,
    stats TEXT
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    key_id TEXT NOT NULL,
    app TEXT NOT NULL,
    requests INTEGER NOT NULL,
    images INTEGER NOT NULL,
    megapixels INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, app)
);
CREATE TABLE IF NOT EXISTS webhooks (
    job_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    next_at REAL NOT NULL DEFAULT 0,
    lease_until REAL,
    attempts TEXT NOT NULL DEFAULT '[]'
);
"""

COLUMNS = (
    "id, app, spec, status, created_at, started_at, finished_at, output, error, worker_id, lease_until, "
    "attempts, start_deadline, gateway_request_id, webhook_url, blob_keys, key_id"
)
# Columns added after a table was first created: added to older files at open.
MIGRATIONS = (("jobs", "key_id", "TEXT"), ("workers", "stats", "TEXT"))
# How far down the queue a batch looks for compatible jobs.
SCAN_FOR_BATCH = 256
TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in TERMINAL) + ")"


class SQLiteJobStore:
    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        retry_budget_s: float = RETRY_BUDGET_S,
    ) -> None:
        self._clock = clock
        # Wakes other processes' waiters (a worker waiting for work, an API waiting for a result) at once.
        self._doorbell = Doorbell(doorbell_folder(path))
        # Writes retried while another process holds the lock; reads on their own connections (see that module).
        self._conns = Connections(path, busy_timeout_s, retry_budget_s)
        self._db = self._conns.writer
        self._conns.retrying(lambda: self._db.executescript(SCHEMA))
        self._conns.retrying(self._migrate)

    def _migrate(self) -> None:
        for table, column, declaration in MIGRATIONS:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @classmethod
    def open(cls, path: Path, clock: Callable[[], float] = time.time, **timeouts: float) -> SQLiteJobStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, clock, **timeouts)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken up front (IMMEDIATE) so concurrent processes queue, never deadlock.
        Every committed change rings the doorbell: waiters elsewhere re-read instead of polling blindly.
        A database another process keeps locked is retried, then raises StoreBusy (sqlite_connections.py)."""
        with self._conns.transaction() as db:
            before = db.total_changes
            yield db
            changed = db.total_changes != before
        if changed:  # an idle claim or an empty requeue sweep wakes nobody
            self._doorbell.ring()

    def wait_for_change(self, timeout_s: float) -> bool:
        """Block until some process changes the store, or timeout_s passes."""
        return self._doorbell.wait(timeout_s)

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        return self._conns.read(sql, args)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _row_to_job(rows[0]) if rows else None

    def queue_position(self, job_id: str) -> int | None:
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq < j.seq)"
            " FROM jobs AS j WHERE j.id = ? AND j.status = 'queued'",
            (job_id,),
        )
        return rows[0][0] if rows else None

    def count_queued(self) -> int:
        return self._read("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")[0][0]

    def logs(self, job_id: str) -> list[LogLine]:
        rows = self._read("SELECT message, ts, level FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [LogLine(message=m, timestamp=ts, level=level) for m, ts, level in rows]

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT attempts FROM webhooks WHERE job_id = ?", (job_id,))
        return json.loads(rows[0][0]) if rows else []

    # -- the life of a job ---------------------------------------------------------------------------

    def submit(self, job: Job, admission: Admission | None = None) -> None:
        with self._write() as db:
            # Submitting the same id twice is a no-op, as in every store (a retry after a lost reply is not
            # refused for a queue its own first try filled).
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                return
            # Counted inside the write transaction (BEGIN IMMEDIATE): no other process can insert between the
            # count and the insert, so the cap holds exactly under any number of racing submits.
            if admission is not None:
                _admit(db, job, admission)
            inserted = db.execute(
                "INSERT OR IGNORE INTO jobs (id, app, spec, status, created_at, start_deadline, gateway_request_id,"
                " webhook_url, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.app, json.dumps(job.spec.to_dict()), JobStatus.QUEUED.value, job.created_at,
                 job.start_deadline, job.gateway_request_id, job.webhook_url, job.key_id),
            )  # fmt: skip
            if job.webhook_url and inserted.rowcount == 1:
                db.execute("INSERT INTO webhooks (job_id, url) VALUES (?, ?)", (job.id, job.webhook_url))

    def claim(self, worker_id: str, lease_s: float, max_per_key: int = 0) -> Job | None:
        now = self._clock()
        with self._write() as db:
            self._expire_start_deadlines(now)
            candidates = db.execute(
                "SELECT id, key_id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?", (SCAN_FOR_BATCH,)
            ).fetchall()
            job_id = fairness.pick(candidates, *self._key_stats(db), max_per_key) if candidates else None
            if job_id:
                self._transition_in_tx(
                    job_id, JobStatus.RUNNING, started_at=now, worker_id=worker_id, lease_until=now + lease_s
                )
                db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
        return self.get(job_id) if job_id else None

    def _key_stats(self, db: sqlite3.Connection) -> tuple[dict, dict]:
        """Running jobs per key, and when each key last had a job started (for fairness.pick)."""
        running = dict(db.execute("SELECT key_id, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY key_id"))
        served = dict(db.execute(
            "SELECT key_id, MAX(started_at) FROM jobs WHERE started_at IS NOT NULL GROUP BY key_id"
        ).fetchall())  # fmt: skip
        return running, served

    def claim_matching(self, worker_id: str, lease_s: float, key: dict[str, Any], limit: int) -> list[Job]:
        """Claim up to `limit` of the oldest queued jobs whose spec matches `key` (cross-request batching)."""
        now = self._clock()
        claimed = []
        with self._write() as db:
            rows = db.execute(
                "SELECT id, spec FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?", (SCAN_FOR_BATCH,)
            ).fetchall()
            for job_id, spec in rows:
                if len(claimed) == limit:
                    break
                fields = json.loads(spec)
                if all(fields.get(name) == value for name, value in key.items()) and self._transition_in_tx(
                    job_id, JobStatus.RUNNING, started_at=now, worker_id=worker_id, lease_until=now + lease_s
                ):
                    db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
                    claimed.append(job_id)
        return [job for job in map(self.get, claimed) if job is not None]

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND worker_id = ? AND status = 'running'",
                (self._clock() + lease_s, job_id, worker_id),
            )
        return cur.rowcount == 1

    def requeue_expired(self, max_attempts: int = 3) -> list[str]:
        """Running jobs whose worker stopped renewing go back to the queue, or fail after max_attempts."""
        now = self._clock()
        # Looked at before every claim: a read first, so the common case (nothing expired) takes no write lock.
        if not self._read("SELECT 1 FROM jobs WHERE status = 'running' AND lease_until < ? LIMIT 1", (now,)):
            return []
        with self._write() as db:
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE status = 'running' AND lease_until < ?", (now,)
            ).fetchall()
            requeued = []
            for job_id, attempts in rows:
                if attempts >= max_attempts:
                    self._transition_in_tx(job_id, JobStatus.FAILED, error=_dump_error(JobError.worker_lost(attempts)))
                elif self._transition_in_tx(job_id, JobStatus.QUEUED, worker_id=None, lease_until=None):
                    requeued.append(job_id)
        return requeued

    def expire_start_deadlines(self) -> list[str]:
        with self._write():
            return self._expire_start_deadlines(self._clock())

    def _expire_start_deadlines(self, now: float) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE status = 'queued' AND start_deadline < ?", (now,)
        ).fetchall()
        error = _dump_error(JobError.start_timeout())
        return [job_id for (job_id,) in rows if self._transition_in_tx(job_id, JobStatus.FAILED, error=error)]

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool:
        """Completion and its usage (megapixels per image, rounded up) are recorded in one transaction."""
        with self._write() as db:
            done = self._transition_in_tx(
                job_id, JobStatus.COMPLETED, output=json.dumps(output), blob_keys=json.dumps(list(blob_keys))
            )
            if done:
                app, key_id = db.execute("SELECT app, key_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
                db.execute(
                    "INSERT INTO usage (day, key_id, app, requests, images, megapixels) VALUES (?, ?, ?, 1, ?, ?)"
                    " ON CONFLICT(day, key_id, app) DO UPDATE SET requests = requests + 1,"
                    " images = images + excluded.images, megapixels = megapixels + excluded.megapixels",
                    (usage_day(self._clock()), key_id or "", app, len(output.get("images", [])), megapixels(output)),
                )
        return done

    def fail(self, job_id: str, error: JobError) -> bool:
        return self._transition(job_id, JobStatus.FAILED, error=_dump_error(error))

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED)

    def append_log(self, job_id: str, line: LogLine) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO job_logs (job_id, ts, level, message) VALUES (?, ?, ?, ?)",
                (job_id, line.timestamp, line.level, line.message),
            )

    # -- retention -----------------------------------------------------------------------------------

    def drop_output(self, job_id: str) -> None:
        """Forget a finished job's output (sync_mode results are not kept)."""
        with self._write() as db:
            db.execute("UPDATE jobs SET output = NULL WHERE id = ?", (job_id,))

    def purge_finished(self, before: float) -> list[str]:
        """Delete jobs that ended before `before` and have no webhook left to send; return their blob keys."""
        with self._write() as db:
            rows = db.execute(
                f"SELECT id, blob_keys FROM jobs WHERE status IN {TERMINAL_SQL} AND finished_at < ?"
                " AND id NOT IN (SELECT job_id FROM webhooks WHERE state = 'pending')",
                (before,),
            ).fetchall()
            for table, column in (("jobs", "id"), ("job_logs", "job_id"), ("webhooks", "job_id")):
                db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(job_id,) for job_id, _ in rows])
        return [key for _, keys in rows for key in json.loads(keys)]

    # -- webhooks ------------------------------------------------------------------------------------

    def claim_webhooks(self, lease_s: float, limit: int = 16, max_attempts: int = 0) -> list[WebhookDelivery]:
        """Due deliveries of finished jobs, each leased for one attempt; the claim is what counts a send.

        A delivery still leased when its lease ran out was claimed by a dispatcher that never reported: that
        attempt may have reached the receiver, so it is recorded as lost and counts. One that has had
        max_attempts (0: no limit) is failed here instead of being handed out again."""
        now = self._clock()
        out = []
        with self._write() as db:
            rows = db.execute(
                "SELECT w.job_id, w.url, w.attempts, w.lease_until FROM webhooks w JOIN jobs j ON j.id = w.job_id"
                f" WHERE w.state = 'pending' AND w.next_at <= ? AND j.status IN {TERMINAL_SQL}"
                " AND (w.lease_until IS NULL OR w.lease_until < ?) LIMIT ?",
                (now, now, limit),
            ).fetchall()
            for job_id, url, raw, lease_until in rows:
                attempts = json.loads(raw)
                if lease_until is not None:
                    attempts.append(lost_attempt(len(attempts) + 1, now))
                if max_attempts and len(attempts) >= max_attempts:
                    db.execute(
                        "UPDATE webhooks SET attempts = ?, state = 'failed', lease_until = NULL WHERE job_id = ?",
                        (json.dumps(attempts), job_id),
                    )
                    continue
                db.execute(
                    "UPDATE webhooks SET attempts = ?, lease_until = ? WHERE job_id = ?",
                    (json.dumps(attempts), now + lease_s, job_id),
                )
                out.append(WebhookDelivery(job_id=job_id, url=url, attempts=attempts))
        return out

    def record_webhook_attempt(self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: str) -> bool:
        """state: 'pending' (retry at next_at), 'delivered' or 'failed' (given up). Fenced by attempt["number"]:
        only the claim that handed out that number may record it, so a dispatcher whose lease ran out cannot
        write over a newer attempt or bring a failed delivery back to pending. False when refused."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE webhooks SET attempts = json_insert(attempts, '$[#]', json(?)), state = ?,"
                " next_at = COALESCE(?, next_at), lease_until = NULL"
                " WHERE job_id = ? AND state = 'pending' AND lease_until IS NOT NULL"
                " AND json_array_length(attempts) = ? - 1",
                (json.dumps(attempt), state, next_at, job_id, int(attempt["number"])),
            )
        return cur.rowcount == 1

    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO workers (id, state, expires_at, stats) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE"
                " SET state = excluded.state, expires_at = excluded.expires_at, stats = excluded.stats",
                (worker_id, state, self._clock() + ttl_s, json.dumps(stats) if stats else None),
            )

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT id, state, stats FROM workers WHERE expires_at >= ? ORDER BY id", (self._clock(),))
        return {w: {"state": state, "stats": json.loads(stats) if stats else None} for w, state, stats in rows}

    def worker_states(self) -> dict[str, str]:
        return {w: report["state"] for w, report in self.worker_reports().items()}

    def queue_stats(self) -> dict[str, float]:
        depth, oldest = self._read("SELECT COUNT(*), MIN(created_at) FROM jobs WHERE status = 'queued'")[0]
        return {"depth": depth, "oldest_age_s": max(0.0, self._clock() - oldest) if oldest else 0.0}

    # -- API keys and usage ------------------------------------------------------------------------------

    def create_key(self, key: ApiKey) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO api_keys (key_id, secret_sha256, name, admin, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.key_id, key.secret_sha256, key.name, int(key.admin), key.created_at),
            )

    def get_key(self, key_id: str) -> ApiKey | None:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        return _row_to_key(rows[0]) if rows else None

    def list_keys(self) -> list[ApiKey]:
        return [_row_to_key(r) for r in self._read(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at")]

    def revoke_key(self, key_id: str) -> bool:
        with self._write() as db:
            return db.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,)).rowcount == 1

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Usage rows (day, key_id, app, requests, images, megapixels), for one key or all."""
        sql = "SELECT day, key_id, app, requests, images, megapixels FROM usage"
        rows = self._read(sql + " WHERE key_id = ? ORDER BY day, key_id, app", (key_id,)) if key_id is not None \
            else self._read(sql + " ORDER BY day, key_id, app")  # fmt: skip
        names = ("day", "key_id", "app", "requests", "images", "megapixels")
        return [dict(zip(names, row)) for row in rows]

    def close(self) -> None:
        self._conns.close()
        self._doorbell.close()

    # -- the one place a status changes -------------------------------------------------------------

    def _transition(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        with self._write():
            return self._transition_in_tx(job_id, target, **fields)

    def _transition_in_tx(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        if target.terminal:
            fields["finished_at"] = self._clock()
            fields["lease_until"] = None
        sources = sorted(s.value for s in TRANSITIONS[target])
        assignments = ", ".join(f"{name} = ?" for name in ["status", *fields])
        placeholders = ", ".join("?" for _ in sources)
        cur = self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN ({placeholders})",
            (target.value, *fields.values(), job_id, *sources),
        )
        return cur.rowcount == 1


KEY_COLUMNS = "key_id, secret_sha256, name, admin, created_at, revoked"


def _admit(db: sqlite3.Connection, job: Job, admission: Admission) -> None:
    """Raise QueueFull unless `job` fits under `admission`; called inside the write transaction."""
    cap = admission.max_queued
    queued = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
    if cap is not None and queued >= cap:
        raise QueueFull("queue", cap)
    per_key = admission.max_queued_per_key
    if per_key and job.key_id:
        mine = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE key_id = ? AND status = 'queued'", (job.key_id,)
        ).fetchone()[0]  # fmt: skip
        if mine >= per_key:
            raise QueueFull("key", per_key)


def _row_to_key(row: tuple) -> ApiKey:
    key_id, secret, name, admin, created, revoked = row
    return ApiKey(key_id, secret, name, bool(admin), created, bool(revoked))


def _dump_error(error: JobError) -> str:
    return json.dumps(error.to_dict())


def _row_to_job(row: tuple) -> Job:
    (job_id, app, spec, status, created, started, finished, output, error, worker_id, lease_until,
     attempts, start_deadline, gateway_request_id, webhook_url, blob_keys, key_id) = row  # fmt: skip
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
        attempts=attempts,
        start_deadline=start_deadline,
        gateway_request_id=gateway_request_id,
        webhook_url=webhook_url,
        blob_keys=json.loads(blob_keys),
        key_id=key_id,
    )
