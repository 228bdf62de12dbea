"""The scale-out job store: Redis, shared by any number of API nodes and workers.

A reliable-queue pattern on sorted sets, with every state change in one Lua script (atomic on the server):
- `queue`     queued job ids scored by priority, then submission order (`queue_score` in the job's hash):
              ZRANK is the exact queue position, across nodes; the first entries are the claim's candidates;
- `running`   running job ids scored by lease expiry: expired entries are the jobs of dead workers, and go back
              to `queue` with their original score, so a requeued job keeps its place;
- `deadlines` queued jobs with a start deadline; `finished` terminal jobs by end time (retention);
- `queued_by:<key>` the queued job ids of one API key: its share of the queue, counted in O(1) at submit;
- `hooks`     webhooks due for delivery, scored by when (a claim pushes the score out: that is its lease).
Transitions check jobs.TRANSITIONS inside the script, so a cancel racing a completion has exactly one winner.
Time comes from the caller's clock (nodes keep their clocks in sync with NTP), which keeps tests deterministic.
The scripts live in redis_scripts.lua; which jobs a claim takes is decided by scheduling.plan.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any, Callable

from fluxserve.core.accounts import ApiKey, usage_day
from fluxserve.core.errors import StoreBusy
from fluxserve.core.jobs import (
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
from fluxserve.store.protocols import Admission, QueueFull, StatusView, lost_attempt
from fluxserve.store.scheduling import CANDIDATE_SCAN, RANK, TOP_RANK, Candidate, ClaimPolicy, KeyLoad, plan

DEFAULT_NAMESPACE = "fluxserve:"
SCRIPT_MARK = "-- script: "
# A job's queue score is its sequence number plus this for each rank below the top (scheduling.RANK): every
# job of a higher priority scores below every job of a lower one. Sequence numbers stay far below it, and
# scores stay exact integers (doubles hold 2**53). A job stored without a score (and so without a priority)
# is normal: scored by its sequence number.
PRIORITY_STRIDE = 2**40


def load_scripts() -> dict[str, str]:
    """{name: source} from redis_scripts.lua, each with the shared functions that precede the first script."""
    shared, *sections = records.package_text("redis_scripts.lua").split("\n" + SCRIPT_MARK)
    return {name: shared + "\n" + body for name, _, body in (s.partition("\n") for s in sections)}


def _allowed(target: JobStatus) -> str:
    return "," + ",".join(s.value for s in TRANSITIONS[target]) + ","


def _num(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def _cap(value: int | None) -> str:
    return "" if value is None else str(int(value))


def _log_lines(rows: list[str]) -> list[LogLine]:
    return [LogLine(message=m, timestamp=ts, level=level) for m, ts, level in map(json.loads, rows)]


def _candidates(rows: list[list[str]], now: float) -> list[Candidate]:
    """The queued jobs the candidates script listed, less those past their start deadline (the claim script
    fails them first). Missing fields come back as "" (Lua has no nil in a list)."""
    return [records.candidate(job_id, key_id or None, spec, priority)
            for job_id, key_id, spec, deadline, priority in rows
            if spec and (not deadline or float(deadline) >= now)]  # fmt: skip


def _client_options(retry_class: Any) -> dict[str, Any]:
    """The sync and the asyncio client alike: retries with backoff, so a Redis restart is ridden through."""
    import redis
    from redis.backoff import ExponentialBackoff

    return dict(
        decode_responses=True,
        retry=retry_class(ExponentialBackoff(cap=1.0, base=0.05), retries=40),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        socket_timeout=10,
        health_check_interval=15,
    )


# A status read's limit on its asyncio client, kept by one asyncio.timeout around the script (retries
# included, about as long as the client's retry budget rides out a restart) rather than by the client's
# socket_timeout: with that set, redis-py wraps every send in asyncio.wait_for, a task per command.
ASYNC_READ_TIMEOUT_S = 30.0


class RedisJobStore:
    local_reads = False  # every read is a network round trip (protocols.KeyStore.local_reads)

    def __init__(self, client: Any, namespace: str = DEFAULT_NAMESPACE, clock: Callable[[], float] = time.time,
                 url: str | None = None) -> None:  # fmt: skip
        self.redis = client
        self._url = url  # for the asyncio client of status_view_async
        self.ns = namespace
        self._clock = clock
        self._scripts = {name: client.register_script(body) for name, body in load_scripts().items()}
        self._pubsub: Any = None
        self._async: Any = None

    @classmethod
    def open(cls, url: str, namespace: str = DEFAULT_NAMESPACE, clock: Callable[[], float] = time.time):
        """Connect with retries, so a Redis restart is ridden through instead of failing requests."""
        import redis
        from redis.retry import Retry

        return cls(redis.Redis.from_url(url, **_client_options(Retry)), namespace, clock, url)

    def _run(self, script: str, *args: Any, jobs: Callable[[Any], Iterable[str] | None] = lambda _: None):
        """Run a script; signal a change only when it wrote something (see redis_scripts.lua), naming the jobs
        `jobs` finds in the script's value (None: any job may have changed)."""
        changed, value = self._scripts[script](args=[self.ns, *args])
        if changed:
            self._changed(jobs(value))
        return value

    def _changed(self, jobs: Iterable[str] | None = None, logs: Iterable[str] = ()) -> None:
        """Tell waiting workers and API nodes which jobs changed (pub/sub: no state, nothing to clean up)."""
        self.redis.publish(f"{self.ns}events", changes.encode(jobs, logs))

    def wait_for_change(self, timeout_s: float) -> Changes:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(f"{self.ns}events")
        heard = changes.NOTHING
        try:
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None:
                heard |= changes.decode(message["data"])
                message = self._pubsub.get_message(timeout=0)
        except Exception:  # a Redis restart drops the subscription: start a new one next time
            self._pubsub = None
        return heard

    def _key(self, kind: str, job_id: str) -> str:
        return f"{self.ns}{kind}:{job_id}"

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        fields = self.redis.hgetall(self._key("job", job_id))
        return records.job_from_fields({**fields, "id": job_id}) if fields else None

    def status_view(self, job_id: str, with_logs: bool) -> StatusView | None:
        """One read-only script (status_view): the job's hash, its rank and its logs, atomically."""
        _, reply = self._scripts["status_view"](args=[self.ns, job_id, "1" if with_logs else ""])
        return self._view(job_id, reply, with_logs)

    async def status_view_async(self, job_id: str, with_logs: bool) -> StatusView | None:
        """The same script on an asyncio client of this loop: a third less CPU than a thread-pool hop, by the
        in-process profile."""
        client, script = self._loop_client()
        try:
            async with asyncio.timeout(ASYNC_READ_TIMEOUT_S):
                _, reply = await script(args=[self.ns, job_id, "1" if with_logs else ""], client=client)
        except TimeoutError:  # a stalled server: the client is told to retry (503), the process goes on
            raise StoreBusy(f"Redis did not answer a status read within {ASYNC_READ_TIMEOUT_S:g} s") from None
        return self._view(job_id, reply, with_logs)

    @staticmethod
    def _view(job_id: str, reply: list[Any], with_logs: bool) -> StatusView | None:
        flat, rank, logs = reply
        if not flat:
            return None
        job = records.job_from_fields({**dict(zip(flat[::2], flat[1::2])), "id": job_id})
        return StatusView(job, rank if job.status is JobStatus.QUEUED and rank >= 0 else None,
                          _log_lines(logs) if with_logs else None)  # fmt: skip

    def _loop_client(self) -> tuple[Any, Any]:
        """An asyncio client (and its status script) for the running loop, made on first use: an asyncio
        connection belongs to the loop that opened it."""
        import redis.asyncio
        from redis.asyncio.retry import Retry

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            if self._url is None:
                raise RuntimeError("status_view_async needs a store made by RedisJobStore.open(url)")
            options = {**_client_options(Retry), "socket_timeout": None}  # status_view_async times the read
            client = redis.asyncio.Redis.from_url(self._url, **options)
            self._async = (loop, client, client.register_script(self._scripts["status_view"].script))
        return self._async[1], self._async[2]

    def queue_position(self, job_id: str) -> int | None:
        return self.redis.zrank(f"{self.ns}queue", job_id)

    def count_queued(self) -> int:
        return self.redis.zcard(f"{self.ns}queue")

    def logs(self, job_id: str) -> list[LogLine]:
        return _log_lines(self.redis.lrange(self._key("logs", job_id), 0, -1))

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]:
        return json.loads(self.redis.hget(self._key("hook", job_id), "attempts") or "[]")

    # -- the life of a job ---------------------------------------------------------------------------

    def submit(self, job: Job, admission: Admission | None = None) -> None:
        fields = {name: _num(value) if isinstance(value, float) else value
                  for name, value in records.new_job_fields(job).items() if value is not None and name != "id"}
        # Submitting the same id twice is a no-op, so a retry after a lost reply is safe.
        admission = admission or Admission()
        per_key = admission.max_queued_per_key or None  # 0: no cap
        outcome = self._scripts["submit"](args=[
            self.ns, job.id, json.dumps(fields), job.webhook_url or "",
            _cap(admission.max_queued), _cap(per_key), (TOP_RANK - RANK[job.priority]) * PRIORITY_STRIDE,
        ])  # fmt: skip
        if outcome == 1:  # a refusal changes nothing: a flood of 429s wakes no waiter
            self._changed([job.id])
        elif outcome == -1:
            raise QueueFull("queue", admission.max_queued or 0)
        elif outcome == -2:
            raise QueueFull("key", per_key or 0)

    def claim(self, worker_id: str, lease_s: float, policy: ClaimPolicy) -> list[Job]:
        """The jobs scheduling.plan picks, claimed by one script, which expires start deadlines first and
        skips a planned job another worker took meanwhile (racing workers cannot both take it)."""
        rows = self._run("candidates", CANDIDATE_SCAN)
        if not rows:
            return []
        now = self._clock()
        chosen = plan(_candidates(rows, now), self._load(), policy)
        claimed, expired = self._run(
            "claim", _num(now), _num(now + lease_s), worker_id, _allowed(JobStatus.RUNNING),
            _allowed(JobStatus.FAILED), records.dump_error(JobError.start_timeout()), json.dumps(chosen),
            jobs=lambda value: [*value[0], *value[1]],
        )  # fmt: skip
        return [job for job in map(self.get, claimed) if job is not None]

    def _load(self) -> KeyLoad:
        running: dict[str | None, int] = {}
        for (key_id,) in self._hmget_each(self.redis.zrange(f"{self.ns}running", 0, -1), ["key_id"]):
            running[key_id] = running.get(key_id, 0) + 1
        served = self.redis.hgetall(f"{self.ns}served")
        return KeyLoad(running, {key_id or None: float(at) for key_id, at in served.items()})

    def _hmget_each(self, job_ids: list[str], fields: list[str]) -> list[list[str | None]]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._key("job", job_id), fields)
        return pipe.execute()

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        # A lease is in nobody's status: its renewal wakes no job's waiters.
        return self._run("renew", job_id, worker_id, _num(self._clock() + lease_s), jobs=lambda _: ()) == 1

    def requeue_expired(self, max_attempts: int = 3) -> list[str]:
        """Looked at before every claim: one read when nothing expired."""
        now = self._clock()
        expired = self.redis.zrangebyscore(f"{self.ns}running", "-inf", f"({_num(now)}")
        if not expired:
            return []
        seen = {}
        for job_id, (attempts, options) in zip(expired, self._hmget_each(expired, ["attempts", "options"])):
            count = int(attempts or 0)
            lost = worker_lost_error(count, max_attempts, records.options_of(options).no_retry)
            seen[job_id] = {"attempts": count, "error": "" if lost is None else records.dump_error(lost)}
        return self._run(
            "requeue", _num(now), _allowed(JobStatus.QUEUED), _allowed(JobStatus.FAILED), json.dumps(seen)
        )

    def expire_start_deadlines(self) -> list[str]:
        error = records.dump_error(JobError.start_timeout())
        return self._run("expire_deadlines", _num(self._clock()), _allowed(JobStatus.FAILED), error,
                         jobs=lambda expired: expired)  # fmt: skip

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool:
        """Completion and its usage are recorded by one script: atomic, counted once."""
        key_id, app = self.redis.hmget(self._key("job", job_id), ["key_id", "app"])
        now = self._clock()
        usage = records.UsageIncrement.of(output)
        return self._run(
            "complete", job_id, _num(now), _allowed(JobStatus.COMPLETED),
            json.dumps(records.completion_fields(output, list(blob_keys))), usage_day(now),
            f"{records.usage_owner(key_id)}|{app or ''}", usage.images, usage.megapixels,
            jobs=lambda _: [job_id],
        ) == 1  # fmt: skip

    def fail(self, job_id: str, error: JobError) -> bool:
        return self._transition(job_id, JobStatus.FAILED, {"error": records.dump_error(error)})

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED, {})

    def append_log(self, job_id: str, line: LogLine) -> None:
        self.append_logs([(job_id, line)])

    def append_logs(self, entries: Iterable[tuple[str, LogLine]]) -> None:
        """One round trip (a transaction) for all of them and the signal naming their jobs."""
        entries = list(entries)
        if not entries:
            return
        pipe = self.redis.pipeline()
        for job_id, line in entries:
            pipe.rpush(self._key("logs", job_id), json.dumps([line.message, line.timestamp, line.level]))
        pipe.publish(f"{self.ns}events", changes.encode((), logs=[job_id for job_id, _ in entries]))
        pipe.execute()

    def _transition(self, job_id: str, target: JobStatus, fields: dict[str, Any]) -> bool:
        now = _num(self._clock())
        return self._run("transition", job_id, target.value, now, _allowed(target), json.dumps(fields),
                         jobs=lambda _: [job_id]) == 1  # fmt: skip

    # -- retention -----------------------------------------------------------------------------------

    def drop_output(self, job_id: str) -> None:
        # A finished job's spec changes nowhere else, so the read and the write need no script.
        job = self._key("job", job_id)
        spec = self.redis.hget(job, "spec")
        if spec is not None:
            erased = records.spec_without_payload(spec)
            self.redis.pipeline().hdel(job, "output").hset(job, "spec", erased).execute()

    def purge_finished(self, before: float) -> list[str]:
        return [key for keys in self._run("purge", _num(before)) for key in json.loads(keys)]

    # -- webhooks ------------------------------------------------------------------------------------

    def claim_webhooks(self, lease_s: float, limit: int = 16, max_attempts: int = 0) -> list[WebhookDelivery]:
        now = self._clock()
        lost = json.dumps(lost_attempt(0, now))
        # A delivery is in no job's status: its writes wake no job's waiters.
        rows = self._run("claim_hooks", _num(now), _num(now + lease_s), limit, max_attempts, lost,
                         jobs=lambda _: ())  # fmt: skip
        return [WebhookDelivery(job_id=i, url=url, attempts=json.loads(a or "[]")) for i, url, a in rows]

    def record_webhook_attempt(
        self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: DeliveryState
    ) -> bool:
        state = DeliveryState(state)
        return self._run("record_hook", job_id, json.dumps(attempt), _num(next_at) or "", state.value,
                         jobs=lambda _: ()) == 1  # fmt: skip

    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        # A sorted set scored by expiry: readers drop lapsed entries without trusting Redis' clock.
        self.redis.hset(f"{self.ns}workers", worker_id, json.dumps({"state": state, "stats": stats}))
        self.redis.zadd(f"{self.ns}worker_expiry", {worker_id: self._clock() + ttl_s})

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        live = self.redis.zrangebyscore(f"{self.ns}worker_expiry", self._clock(), "+inf")
        reports = self.redis.hmget(f"{self.ns}workers", live) if live else []
        return {w: json.loads(r) for w, r in sorted(zip(live, reports)) if r is not None}

    def worker_states(self) -> dict[str, str]:
        return records.worker_states(self.worker_reports())

    def queue_stats(self) -> dict[str, float]:
        oldest = self.redis.zrange(f"{self.ns}queue", 0, 0)
        created = self.redis.hget(self._key("job", oldest[0]), "created_at") if oldest else None
        age = max(0.0, self._clock() - float(created)) if created else 0.0
        return {"depth": self.count_queued(), "oldest_age_s": age}

    # -- API keys and usage ------------------------------------------------------------------------------

    def create_key(self, key: ApiKey) -> None:
        fields = records.key_fields(key)
        fields["created_at"] = _num(key.created_at)
        del fields["key_id"]
        self.redis.hset(self._key("key", key.key_id), mapping=fields)
        self.redis.zadd(f"{self.ns}keys", {key.key_id: key.created_at})

    def get_key(self, key_id: str) -> ApiKey | None:
        fields = self.redis.hgetall(self._key("key", key_id))
        return records.key_from_fields({**fields, "key_id": key_id}) if fields else None

    def list_keys(self) -> list[ApiKey]:
        return [k for k in map(self.get_key, self.redis.zrange(f"{self.ns}keys", 0, -1)) if k is not None]

    def revoke_key(self, key_id: str) -> bool:
        if not self.redis.exists(self._key("key", key_id)):
            return False
        with self.redis.pipeline(transaction=True) as pipe:  # MULTI: no node sees one without the other
            pipe.hset(self._key("key", key_id), "revoked", 1)
            pipe.incr(f"{self.ns}key_generation")
            pipe.execute()
        return True

    def key_generation(self) -> int:
        return int(self.redis.get(f"{self.ns}key_generation") or 0)

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        measures: dict[tuple[str, str, str], dict[str, str]] = {}
        for day in sorted(self.redis.smembers(f"{self.ns}usage_days")):
            for field, value in self.redis.hgetall(f"{self.ns}usage:{day}").items():
                owner, app, measure = field.split("|")
                if key_id is None or owner == key_id:
                    measures.setdefault((day, owner, app), {})[measure] = value
        return [records.usage_row(*row, **measures[row]) for row in sorted(measures)]

    async def aclose(self) -> None:
        """Close the asyncio client of this loop (status_view_async), if one was made."""
        if self._async is not None:
            client, self._async = self._async[1], None
            await client.aclose()

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.redis.close()
