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

from fluxserve.core.accounts import ApiKey, usage_day
from fluxserve.core.jobs import (
    TERMINAL,
    TRANSITIONS,
    DeliveryState,
    Job,
    JobError,
    JobStatus,
    LogLine,
    WebhookDelivery,
    worker_lost_error,
)
from fluxserve.store import changes, records
from fluxserve.store.changes import Changes
from fluxserve.store.doorbell import Doorbell, doorbell_folder
from fluxserve.store.protocols import Admission, QueueFull, StatusView, lost_attempt
from fluxserve.store.scheduling import CANDIDATE_SCAN, ClaimPolicy, KeyLoad, plan
from fluxserve.store.sqlite_connections import BUSY_TIMEOUT_S, RETRY_BUDGET_S, Connections

COLUMNS = ", ".join(records.JOB_FIELDS)
KEY_COLUMNS = ", ".join(records.KEY_FIELDS)
# Columns added after a table was first created: added to older files at open.
# An older file's jobs are all normal (scheduling.RANK[Priority.NORMAL] is 1).
MIGRATIONS = (("jobs", "key_id", "TEXT"), ("workers", "stats", "TEXT"),
              ("jobs", "priority", "INTEGER NOT NULL DEFAULT 1"),
              ("jobs", "options", "TEXT"))  # fmt: skip
# The order queued jobs are listed and counted in (rank, then submission); made once its columns exist.
QUEUE_ORDER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_queue_order ON jobs (status, priority DESC, seq)"
# A file from before the `served` table holds no rows there: each key starts from the last start among the
# jobs the file still holds, so an upgrade keeps the order keys were being served in.
SEED_SERVED = ("INSERT OR IGNORE INTO served (key_id, at) SELECT COALESCE(key_id, ''), MAX(started_at) FROM jobs"
               " WHERE started_at IS NOT NULL GROUP BY key_id")  # fmt: skip
TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in TERMINAL) + ")"

# queue_counts (schema.sql) counts the queued jobs per priority and per block of 2**BLOCK_BITS sequence
# numbers: a position adds the counters of the blocks ahead to a count within the job's own block, so it reads
# about depth / 1024 counter rows and at most 1024 index entries instead of every job ahead (17 ms at 10**5).
BLOCK_BITS = 10


def _counting(row: str, sign: str) -> tuple[str, str]:
    """The statements that add `sign`1 to the counters of the job `row` (new or old, in a trigger)."""
    block = f"{row}.seq >> {BLOCK_BITS}"
    return (
        f"INSERT INTO queue_counts (priority, block, n) VALUES ({row}.priority, {block}, {sign}1)"
        " ON CONFLICT (priority, block) DO UPDATE SET n = n + excluded.n;"
        f" DELETE FROM queue_counts WHERE priority = {row}.priority AND block = {block} AND n = 0;",
        f"INSERT INTO queued_by_key (key_id, n) SELECT {row}.key_id, {sign}1 WHERE {row}.key_id IS NOT NULL"
        " ON CONFLICT (key_id) DO UPDATE SET n = n + excluded.n;"
        f" DELETE FROM queued_by_key WHERE key_id = {row}.key_id AND n = 0;",
    )


# Every way a job enters or leaves the queue goes through these, so no code path can forget a counter. Made
# once the priority column exists (an older file gains it at open).
COUNTED_COLUMNS = "UPDATE OF status, priority, seq, key_id ON jobs"
QUEUE_COUNT_TRIGGERS = {
    name: f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} WHEN {row}.status = 'queued' BEGIN"
    f" {' '.join(_counting(row, sign))} END"
    for name, event, row, sign in (
        ("queue_counts_insert", "INSERT ON jobs", "new", "+"),
        ("queue_counts_leave", COUNTED_COLUMNS, "old", "-"),
        ("queue_counts_enter", COUNTED_COLUMNS, "new", "+"),
        ("queue_counts_delete", "DELETE ON jobs", "old", "-"),
    )
}
# The counters counted afresh from the jobs, with the triggers made in the same transaction: a file written
# without the triggers (a new file, an older version, a hand edit) is counted once, when it gains them.
RECOUNT_QUEUE = (
    "DELETE FROM queue_counts",
    f"INSERT INTO queue_counts (priority, block, n) SELECT priority, seq >> {BLOCK_BITS}, COUNT(*) FROM jobs"
    f" WHERE status = 'queued' GROUP BY priority, seq >> {BLOCK_BITS}",
    "DELETE FROM queued_by_key",
    "INSERT INTO queued_by_key (key_id, n) SELECT key_id, COUNT(*) FROM jobs"
    " WHERE status = 'queued' AND key_id IS NOT NULL GROUP BY key_id",
)
# The queued jobs ahead of the job `j` (queued): every one of higher priority, and the older ones of its own.
POSITION_OF_J = (
    "(SELECT COALESCE(SUM(c.n), 0) FROM queue_counts AS c WHERE c.priority > j.priority"
    f" OR c.priority = j.priority AND c.block < j.seq >> {BLOCK_BITS})"
    " + (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.priority = j.priority"
    f" AND ahead.seq >= (j.seq >> {BLOCK_BITS}) << {BLOCK_BITS} AND ahead.seq < j.seq)"
)
QUEUED_COUNT = "SELECT COALESCE(SUM(n), 0) FROM queue_counts"
LOGS_OF = "SELECT message, ts, level FROM job_logs WHERE job_id = ? ORDER BY rowid"


class SQLiteJobStore:
    local_reads = True  # a local file (protocols.KeyStore.local_reads)

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
        self._conns.retrying(lambda: self._db.executescript(records.package_text("schema.sql")))
        self._conns.retrying(self._migrate)
        self._count_queue()

    def _migrate(self) -> None:
        for table, column, declaration in MIGRATIONS:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self._db.execute(QUEUE_ORDER_INDEX)
        if not self._db.execute("SELECT 1 FROM served LIMIT 1").fetchone():
            self._db.execute(SEED_SERVED)

    def _count_queue(self) -> None:
        """Make the queue counters' triggers and count the queue, in one write transaction, when a trigger is
        missing (a new file, or one written without them); with the triggers in place the counters are exact,
        whichever process or version wrote since, and opening costs no recount (a second at 10**5 queued)."""
        names = list(QUEUE_COUNT_TRIGGERS)
        with self._conns.transaction() as db:
            listed = ", ".join("?" for _ in names)
            present = db.execute(
                f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({listed})", names
            ).fetchone()[0]
            if present == len(names):
                return
            for statement in (*QUEUE_COUNT_TRIGGERS.values(), *RECOUNT_QUEUE):
                db.execute(statement)

    @classmethod
    def open(cls, path: Path, clock: Callable[[], float] = time.time, **timeouts: float) -> SQLiteJobStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, clock, **timeouts)

    @contextmanager
    def _write(
        self, jobs: Iterable[str] | None = None, logs: Iterable[str] = ()
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction: taken up front (IMMEDIATE) so concurrent processes queue, never deadlock.
        Every committed change rings the doorbell, naming `jobs` (read once committed, so a list the body
        fills works; None: any job may have changed) and those whose `logs` grew (store/changes.py): their
        waiters re-read instead of polling blindly.
        A database another process keeps locked is retried, then raises StoreBusy (sqlite_connections.py)."""
        with self._conns.transaction() as db:
            before = db.total_changes
            yield db
            changed = db.total_changes != before
        if changed:  # an idle claim or an empty requeue sweep wakes nobody
            self._doorbell.ring(changes.encode(jobs, logs))

    def wait_for_change(self, timeout_s: float) -> Changes:
        """Block until some process changes the store, or timeout_s passes."""
        return self._doorbell.wait(timeout_s)

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        return self._conns.read(sql, args)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return records.job_from_fields(dict(zip(records.JOB_FIELDS, rows[0]))) if rows else None

    def status_view(self, job_id: str, with_logs: bool) -> StatusView | None:
        """One read transaction: the job with its position (one statement), then its logs if asked."""

        def reads(db: sqlite3.Connection) -> StatusView | None:
            position = f"CASE WHEN status = 'queued' THEN {POSITION_OF_J} END"
            row = db.execute(
                f"SELECT {COLUMNS}, {position} FROM jobs AS j WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            logs = _log_lines(db.execute(LOGS_OF, (job_id,)).fetchall()) if with_logs else None
            return StatusView(records.job_from_fields(dict(zip(records.JOB_FIELDS, row))), row[-1], logs)

        return self._conns.read_together(reads)

    async def status_view_async(self, job_id: str, with_logs: bool) -> StatusView | None:
        return self.status_view(job_id, with_logs)  # local_reads: in place, on the caller's loop

    async def aclose(self) -> None:
        """Nothing to close on the loop (status_view_async reads in place)."""

    def queue_position(self, job_id: str) -> int | None:
        """The queued jobs ahead of it: every one of higher priority, and the older ones of its own."""
        sql = f"SELECT {POSITION_OF_J} FROM jobs AS j WHERE id = ? AND status = 'queued'"
        rows = self._read(sql, (job_id,))
        return rows[0][0] if rows else None

    def count_queued(self) -> int:
        return self._read(QUEUED_COUNT)[0][0]

    def logs(self, job_id: str) -> list[LogLine]:
        return _log_lines(self._read(LOGS_OF, (job_id,)))

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT attempts FROM webhooks WHERE job_id = ?", (job_id,))
        return json.loads(rows[0][0]) if rows else []

    # -- the life of a job ---------------------------------------------------------------------------

    def submit(self, job: Job, admission: Admission | None = None) -> None:
        with self._write([job.id]) as db:
            # Submitting the same id twice is a no-op, as in every store (a retry after a lost reply is not
            # refused for a queue its own first try filled).
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                return
            # Counted inside the write transaction (BEGIN IMMEDIATE): no other process can insert between the
            # count and the insert, so the cap holds exactly under any number of racing submits.
            if admission is not None:
                _admit(db, job, admission)
            fields = {**records.new_job_fields(job), "status": JobStatus.QUEUED.value}
            names = ", ".join(fields)
            inserted = db.execute(
                f"INSERT OR IGNORE INTO jobs ({names}) VALUES ({', '.join('?' for _ in fields)})",
                tuple(fields.values()),
            )
            if job.webhook_url and inserted.rowcount == 1:
                db.execute("INSERT INTO webhooks (job_id, url) VALUES (?, ?)", (job.id, job.webhook_url))

    def claim(self, worker_id: str, lease_s: float, policy: ClaimPolicy) -> list[Job]:
        """The jobs scheduling.plan picks, claimed in the transaction that read them."""
        now = self._clock()
        changed: list[str] = []  # the jobs its signal names: failed for their start deadline, and claimed
        with self._write(changed) as db:
            changed += self._expire_start_deadlines(now)
            rows = db.execute(
                "SELECT id, key_id, spec, priority FROM jobs WHERE status = 'queued'"
                " ORDER BY priority DESC, seq LIMIT ?", (CANDIDATE_SCAN,)
            ).fetchall()
            chosen = plan([records.candidate(*row) for row in rows], self._load(db), policy) if rows else []
            for job_id in chosen:
                self._transition_in_tx(
                    job_id, JobStatus.RUNNING, started_at=now, worker_id=worker_id, lease_until=now + lease_s
                )
                db.execute(
                    "INSERT INTO served (key_id, at) SELECT COALESCE(key_id, ''), ? FROM jobs WHERE id = ?"
                    " ON CONFLICT(key_id) DO UPDATE SET at = excluded.at",
                    (now, job_id),
                )
            changed += chosen
        return [job for job in map(self.get, chosen) if job is not None]

    def _load(self, db: sqlite3.Connection) -> KeyLoad:
        running = dict(db.execute("SELECT key_id, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY key_id"))
        served = {key_id or None: at for key_id, at in db.execute("SELECT key_id, at FROM served")}
        return KeyLoad(running, served)

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        with self._write(()) as db:  # a lease is in nobody's status: its renewal wakes no job's waiters
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
                "SELECT id, attempts, options FROM jobs WHERE status = 'running' AND lease_until < ?", (now,)
            ).fetchall()
            requeued = []
            for job_id, attempts, options in rows:
                lost = worker_lost_error(attempts, max_attempts, records.options_of(options).no_retry)
                if lost is not None:
                    self._transition_in_tx(job_id, JobStatus.FAILED, error=records.dump_error(lost))
                elif self._transition_in_tx(job_id, JobStatus.QUEUED, worker_id=None, lease_until=None):
                    requeued.append(job_id)
        return requeued

    def expire_start_deadlines(self) -> list[str]:
        expired: list[str] = []
        with self._write(expired):
            expired += self._expire_start_deadlines(self._clock())
        return expired

    def _expire_start_deadlines(self, now: float) -> list[str]:
        # Named: without statistics SQLite would walk every queued job by the queue-order index (180 ms of
        # write lock per claim at 10**5 queued) instead of the few with a deadline.
        rows = self._db.execute(
            "SELECT id FROM jobs INDEXED BY jobs_queued_deadline"
            " WHERE status = 'queued' AND start_deadline < ?", (now,),
        ).fetchall()
        error = records.dump_error(JobError.start_timeout())
        return [job_id for (job_id,) in rows if self._transition_in_tx(job_id, JobStatus.FAILED, error=error)]

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool:
        """Completion and its usage (megapixels per image, rounded up) are recorded in one transaction."""
        with self._write([job_id]) as db:
            done = self._transition_in_tx(job_id, JobStatus.COMPLETED, **records.completion_fields(output, list(blob_keys)))
            if done:
                app, key_id = db.execute("SELECT app, key_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
                usage = records.UsageIncrement.of(output)
                db.execute(
                    "INSERT INTO usage (day, key_id, app, requests, images, megapixels) VALUES (?, ?, ?, 1, ?, ?)"
                    " ON CONFLICT(day, key_id, app) DO UPDATE SET requests = requests + 1,"
                    " images = images + excluded.images, megapixels = megapixels + excluded.megapixels",
                    (usage_day(self._clock()), records.usage_owner(key_id), app, usage.images, usage.megapixels),
                )
        return done

    def fail(self, job_id: str, error: JobError) -> bool:
        return self._transition(job_id, JobStatus.FAILED, error=records.dump_error(error))

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED)

    def append_log(self, job_id: str, line: LogLine) -> None:
        self.append_logs([(job_id, line)])

    def append_logs(self, entries: Iterable[tuple[str, LogLine]]) -> None:
        rows = [(job_id, line.timestamp, line.level, line.message) for job_id, line in entries]
        if not rows:
            return
        with self._write((), logs=[job_id for job_id, *_ in rows]) as db:
            db.executemany("INSERT INTO job_logs (job_id, ts, level, message) VALUES (?, ?, ?, ?)", rows)

    # -- retention -----------------------------------------------------------------------------------

    def drop_output(self, job_id: str) -> None:
        with self._write([job_id]) as db:
            for (spec,) in db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchall():
                db.execute("UPDATE jobs SET output = NULL, spec = ? WHERE id = ?",
                           (records.spec_without_payload(spec), job_id))  # fmt: skip

    def purge_finished(self, before: float) -> list[str]:
        """Delete jobs that ended before `before` and have no webhook left to send; return their blob keys."""
        with self._write() as db:
            rows = db.execute(
                f"SELECT id, blob_keys FROM jobs WHERE status IN {TERMINAL_SQL} AND finished_at < ?"
                " AND id NOT IN (SELECT job_id FROM webhooks WHERE state = ?)",
                (before, DeliveryState.PENDING.value),
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
        with self._write(()) as db:  # a delivery is in no job's status
            rows = db.execute(
                "SELECT w.job_id, w.url, w.attempts, w.lease_until FROM webhooks w JOIN jobs j ON j.id = w.job_id"
                f" WHERE w.state = ? AND w.next_at <= ? AND j.status IN {TERMINAL_SQL}"
                " AND (w.lease_until IS NULL OR w.lease_until < ?) LIMIT ?",
                (DeliveryState.PENDING.value, now, now, limit),
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

    def record_webhook_attempt(
        self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: DeliveryState
    ) -> bool:
        """state: pending (retry at next_at), delivered or failed (given up). Fenced by attempt["number"]:
        only the claim that handed out that number may record it, so a dispatcher whose lease ran out cannot
        write over a newer attempt or bring a failed delivery back to pending. False when refused."""
        with self._write(()) as db:
            cur = db.execute(
                "UPDATE webhooks SET attempts = json_insert(attempts, '$[#]', json(?)), state = ?,"
                " next_at = COALESCE(?, next_at), lease_until = NULL"
                " WHERE job_id = ? AND state = ? AND lease_until IS NOT NULL"
                " AND json_array_length(attempts) = ? - 1",
                (json.dumps(attempt), DeliveryState(state).value, next_at, job_id, DeliveryState.PENDING.value,
                 int(attempt["number"])),  # fmt: skip
            )
        return cur.rowcount == 1

    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        with self._write(()) as db:  # no job changed: wakes only those waiting for any change
            db.execute(
                "INSERT INTO workers (id, state, expires_at, stats) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE"
                " SET state = excluded.state, expires_at = excluded.expires_at, stats = excluded.stats",
                (worker_id, state, self._clock() + ttl_s, json.dumps(stats) if stats else None),
            )

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT id, state, stats FROM workers WHERE expires_at >= ? ORDER BY id", (self._clock(),))
        return {w: {"state": state, "stats": json.loads(stats) if stats else None} for w, state, stats in rows}

    def worker_states(self) -> dict[str, str]:
        return records.worker_states(self.worker_reports())

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
            if db.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,)).rowcount != 1:
                return False
            db.execute("INSERT INTO generations (name, value) VALUES ('keys', 1)"
                       " ON CONFLICT(name) DO UPDATE SET value = value + 1")  # fmt: skip
            return True

    def key_generation(self) -> int:
        rows = self._read("SELECT value FROM generations WHERE name = 'keys'")
        return rows[0][0] if rows else 0

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Usage rows (day, key_id, app, requests, images, megapixels), for one key or all."""
        sql = f"SELECT {', '.join(records.USAGE_FIELDS)} FROM usage"
        rows = self._read(sql + " WHERE key_id = ? ORDER BY day, key_id, app", (key_id,)) if key_id is not None \
            else self._read(sql + " ORDER BY day, key_id, app")  # fmt: skip
        return [records.usage_row(*row) for row in rows]

    def close(self) -> None:
        self._conns.close()
        self._doorbell.close()

    # -- the one place a status changes -------------------------------------------------------------

    def _transition(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        with self._write([job_id]):
            return self._transition_in_tx(job_id, target, **fields)

    def _transition_in_tx(self, job_id: str, target: JobStatus, **fields: Any) -> bool:
        if target.terminal:
            fields["finished_at"] = self._clock()
            fields["lease_until"] = None
        increments = ", attempts = attempts + 1" if target is JobStatus.RUNNING else ""  # a claim is an attempt
        sources = sorted(s.value for s in TRANSITIONS[target])
        assignments = ", ".join(f"{name} = ?" for name in ["status", *fields])
        placeholders = ", ".join("?" for _ in sources)
        cur = self._db.execute(
            f"UPDATE jobs SET {assignments}{increments} WHERE id = ? AND status IN ({placeholders})",
            (target.value, *fields.values(), job_id, *sources),
        )
        return cur.rowcount == 1


def _admit(db: sqlite3.Connection, job: Job, admission: Admission) -> None:
    """Raise QueueFull unless `job` fits under `admission`; called inside the write transaction."""
    cap = admission.max_queued
    queued = db.execute(QUEUED_COUNT).fetchone()[0]
    if cap is not None and queued >= cap:
        raise QueueFull("queue", cap)
    per_key = admission.max_queued_per_key
    if per_key and job.key_id:
        mine = db.execute("SELECT n FROM queued_by_key WHERE key_id = ?", (job.key_id,)).fetchone()
        if mine is not None and mine[0] >= per_key:
            raise QueueFull("key", per_key)


def _log_lines(rows: list[tuple]) -> list[LogLine]:
    return [LogLine(message=m, timestamp=ts, level=level) for m, ts, level in rows]


def _row_to_key(row: tuple) -> ApiKey:
    return records.key_from_fields(dict(zip(records.KEY_FIELDS, row)))
