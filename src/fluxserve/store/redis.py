"""The scale-out job store: Redis, shared by any number of API nodes and workers.

A reliable-queue pattern on sorted sets, with every state change in one Lua script (atomic on the server):
- `queue`     queued job ids scored by submission order: ZRANK is the exact queue position, across nodes;
- `running`   running job ids scored by lease expiry: expired entries are the jobs of dead workers, and go back
              to `queue` with their original score, so a requeued job keeps its place;
- `deadlines` queued jobs with a start deadline; `finished` terminal jobs by end time (retention);
- `queued_by:<key>` the queued job ids of one API key: its share of the queue, counted in O(1) at submit;
- `hooks`     webhooks due for delivery, scored by when (a claim pushes the score out: that is its lease).
Transitions check jobs.TRANSITIONS inside the script, so a cancel racing a completion has exactly one winner.
Time comes from the caller's clock (nodes keep their clocks in sync with NTP), which keeps tests deterministic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Callable

from fluxserve.core.jobs import (
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

DEFAULT_NAMESPACE = "fluxserve:"
# How far down the queue a batch looks for compatible jobs.
SCAN_FOR_BATCH = 256

# Shared by every script: change a job's status if the transition table allows it, and keep the indexes true.
TRANSITION_LUA = """
local function transition(ns, id, target, now, allowed, fields)
  local key = ns .. 'job:' .. id
  local status = redis.call('HGET', key, 'status')
  if not status or not string.find(allowed, ',' .. status .. ',', 1, true) then return 0 end
  redis.call('HSET', key, 'status', target)
  local owner = redis.call('HGET', key, 'key_id')
  if owner then
    if target == 'queued' then redis.call('SADD', ns .. 'queued_by:' .. owner, id)
    else redis.call('SREM', ns .. 'queued_by:' .. owner, id) end
  end
  for k, v in pairs(fields) do
    if v == cjson.null then redis.call('HDEL', key, k) else redis.call('HSET', key, k, v) end
  end
  redis.call('ZREM', ns .. 'queue', id)
  redis.call('ZREM', ns .. 'running', id)
  redis.call('ZREM', ns .. 'deadlines', id)
  if target == 'queued' then
    redis.call('ZADD', ns .. 'queue', redis.call('HGET', key, 'seq'), id)
    local deadline = redis.call('HGET', key, 'start_deadline')
    if deadline then redis.call('ZADD', ns .. 'deadlines', deadline, id) end
  elseif target == 'running' then
    redis.call('ZADD', ns .. 'running', redis.call('HGET', key, 'lease_until'), id)
    redis.call('HINCRBY', key, 'attempts', 1)
  else
    redis.call('HSET', key, 'finished_at', now)
    redis.call('HDEL', key, 'lease_until')
    redis.call('ZADD', ns .. 'finished', now, id)
    if redis.call('EXISTS', ns .. 'hook:' .. id) == 1 then redis.call('ZADD', ns .. 'hooks', now, id) end
  end
  return 1
end

local function expire_deadlines(ns, now, allowed, error)
  local expired = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ns .. 'deadlines', '-inf', '(' .. now)) do
    if transition(ns, id, 'failed', now, allowed, {error = error}) == 1 then table.insert(expired, id) end
  end
  return expired
end
"""

SCRIPTS = {
    # ARGV: ns, id, target, now, allowed, fields(json)
    "transition": "return transition(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], cjson.decode(ARGV[6]))",
    # ARGV: ns, id, now, allowed, fields(json), day, usage_key, images, megapixels
    "complete": """
local ns = ARGV[1]
if transition(ns, ARGV[2], 'completed', ARGV[3], ARGV[4], cjson.decode(ARGV[5])) == 0 then return 0 end
local usage = ns .. 'usage:' .. ARGV[6]
redis.call('SADD', ns .. 'usage_days', ARGV[6])
redis.call('HINCRBY', usage, ARGV[7] .. '|requests', 1)
redis.call('HINCRBY', usage, ARGV[7] .. '|images', ARGV[8])
redis.call('HINCRBY', usage, ARGV[7] .. '|megapixels', ARGV[9])
return 1
""",
    # ARGV: ns, id, fields(json), webhook_url ('' for none), max_queued ('' for none), max_queued_per_key
    # ('' for none). The caps are checked by the same script as the insert: atomic across every API node.
    # Returns 1 (inserted), 0 (the id exists: a no-op), -1 (the queue is full), -2 (the key's share is full).
    "submit": """
local ns, id = ARGV[1], ARGV[2]
local key = ns .. 'job:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
local fields = cjson.decode(ARGV[3])
if ARGV[5] ~= '' and redis.call('ZCARD', ns .. 'queue') >= tonumber(ARGV[5]) then return -1 end
if fields['key_id'] then
  local mine = ns .. 'queued_by:' .. fields['key_id']
  if ARGV[6] ~= '' and redis.call('SCARD', mine) >= tonumber(ARGV[6]) then return -2 end
  redis.call('SADD', mine, id)
end
local seq = redis.call('INCR', ns .. 'seq')
for k, v in pairs(fields) do redis.call('HSET', key, k, v) end
redis.call('HSET', key, 'seq', seq, 'status', 'queued', 'attempts', 0)
redis.call('ZADD', ns .. 'queue', seq, id)
if fields['start_deadline'] then redis.call('ZADD', ns .. 'deadlines', fields['start_deadline'], id) end
if ARGV[4] ~= '' then
  redis.call('HSET', ns .. 'hook:' .. id, 'url', ARGV[4], 'state', 'pending', 'attempts', '[]')
end
return 1
""",
    # ARGV: ns, now, lease_until, worker, allowed_running, allowed_failed, deadline_error, job id ('' = oldest)
    "claim": """
local ns, now = ARGV[1], ARGV[2]
expire_deadlines(ns, now, ARGV[6], ARGV[7])
local id = ARGV[8]
if id == '' then
  local ids = redis.call('ZRANGE', ns .. 'queue', 0, 0)
  if #ids == 0 then return false end
  id = ids[1]
end
if transition(ns, id, 'running', now, ARGV[5], {started_at = now, worker_id = ARGV[4], lease_until = ARGV[3]}) == 0
then return false end
local key = redis.call('HGET', ns .. 'job:' .. id, 'key_id')
if key then redis.call('HSET', ns .. 'served', key, now) end
return id
""",
    # ARGV: ns, now, lease_until, worker, allowed_running, key(json), limit, scan
    "claim_matching": """
local ns, now = ARGV[1], ARGV[2]
local key, limit = cjson.decode(ARGV[6]), tonumber(ARGV[7])
local claimed = {}
for _, id in ipairs(redis.call('ZRANGE', ns .. 'queue', 0, tonumber(ARGV[8]) - 1)) do
  if #claimed >= limit then break end
  local spec = cjson.decode(redis.call('HGET', ns .. 'job:' .. id, 'spec'))
  local match = true
  for name, value in pairs(key) do if spec[name] ~= value then match = false end end
  if match and transition(ns, id, 'running', now, ARGV[5],
      {started_at = now, worker_id = ARGV[4], lease_until = ARGV[3]}) == 1 then
    table.insert(claimed, id)
  end
end
return claimed
""",
    # ARGV: ns, now, allowed_failed, deadline_error
    "expire_deadlines": "return expire_deadlines(ARGV[1], ARGV[2], ARGV[3], ARGV[4])",
    # ARGV: ns, id, worker, lease_until
    "renew": """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HGET', key, 'worker_id') ~= ARGV[3] then
  return 0
end
redis.call('HSET', key, 'lease_until', ARGV[4])
redis.call('ZADD', ARGV[1] .. 'running', ARGV[4], ARGV[2])
return 1
""",
    # ARGV: ns, now, max_attempts, allowed_queued, allowed_failed, lost_error_template
    "requeue": """
local ns, now = ARGV[1], ARGV[2]
local requeued = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ns .. 'running', '-inf', '(' .. now)) do
  local attempts = tonumber(redis.call('HGET', ns .. 'job:' .. id, 'attempts') or '0')
  if attempts >= tonumber(ARGV[3]) then
    local error = string.gsub(ARGV[6], '{attempts}', tostring(attempts))
    transition(ns, id, 'failed', now, ARGV[5], {error = error})
  elseif transition(ns, id, 'queued', now, ARGV[4], {worker_id = cjson.null, lease_until = cjson.null}) == 1 then
    table.insert(requeued, id)
  end
end
return requeued
""",
    # ARGV: ns, before
    "purge": """
local ns = ARGV[1]
local keys = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ns .. 'finished', '-inf', '(' .. ARGV[2])) do
  if redis.call('HGET', ns .. 'hook:' .. id, 'state') ~= 'pending' then
    table.insert(keys, redis.call('HGET', ns .. 'job:' .. id, 'blob_keys') or '[]')
    redis.call('DEL', ns .. 'job:' .. id, ns .. 'logs:' .. id, ns .. 'hook:' .. id)
    redis.call('ZREM', ns .. 'finished', id)
    redis.call('ZREM', ns .. 'hooks', id)
  end
end
return keys
""",
    # ARGV: ns, now, lease_until, limit, max_attempts (0: none), lost attempt template (json)
    # A hook still carrying lease_until was claimed and never recorded: that attempt counts (see base.py).
    "claim_hooks": """
local ns = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ns .. 'hooks', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])) do
  local hook = ns .. 'hook:' .. id
  local raw = redis.call('HGET', hook, 'attempts') or '[]'
  if redis.call('HGET', hook, 'state') ~= 'pending' then
    redis.call('ZREM', ns .. 'hooks', id)
  else
    local attempts = cjson.decode(raw)
    if redis.call('HEXISTS', hook, 'lease_until') == 1 then
      local lost = cjson.decode(ARGV[6])
      lost['number'] = #attempts + 1
      lost['at'] = tonumber(ARGV[2])
      table.insert(attempts, lost)
      raw = cjson.encode(attempts)  -- never empty here, so it encodes as a list, not {}
      redis.call('HSET', hook, 'attempts', raw)
    end
    if tonumber(ARGV[5]) > 0 and #attempts >= tonumber(ARGV[5]) then
      redis.call('HSET', hook, 'state', 'failed')
      redis.call('HDEL', hook, 'lease_until')
      redis.call('ZREM', ns .. 'hooks', id)
    else
      redis.call('HSET', hook, 'lease_until', ARGV[3])
      redis.call('ZADD', ns .. 'hooks', ARGV[3], id)
      table.insert(out, {id, redis.call('HGET', hook, 'url'), raw})
    end
  end
end
return out
""",
    # ARGV: ns, id, attempt(json), next_at ('' for none), state. Fenced: 0 unless this is the claimed attempt.
    "record_hook": """
local ns, id = ARGV[1], ARGV[2]
local hook = ns .. 'hook:' .. id
if redis.call('HGET', hook, 'state') ~= 'pending' or redis.call('HEXISTS', hook, 'lease_until') == 0 then
  return 0
end
local attempts = cjson.decode(redis.call('HGET', hook, 'attempts') or '[]')
local attempt = cjson.decode(ARGV[3])
if tonumber(attempt['number']) ~= #attempts + 1 then return 0 end
table.insert(attempts, attempt)
redis.call('HSET', hook, 'attempts', cjson.encode(attempts), 'state', ARGV[5])
redis.call('HDEL', hook, 'lease_until')
if ARGV[5] == 'pending' then redis.call('ZADD', ns .. 'hooks', ARGV[4], id) else redis.call('ZREM', ns .. 'hooks', id) end
return 1
""",
}


def _allowed(target: JobStatus) -> str:
    return "," + ",".join(s.value for s in TRANSITIONS[target]) + ","


def _num(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def _cap(value: int | None) -> str:
    return "" if value is None else str(int(value))


class RedisJobStore:
    def __init__(self, client: Any, namespace: str = DEFAULT_NAMESPACE, clock: Callable[[], float] = time.time):
        self.redis = client
        self.ns = namespace
        self._clock = clock
        self._scripts = {name: client.register_script(TRANSITION_LUA + body) for name, body in SCRIPTS.items()}
        self._pubsub: Any = None

    @classmethod
    def open(cls, url: str, namespace: str = DEFAULT_NAMESPACE, clock: Callable[[], float] = time.time):
        """Connect with retries, so a Redis restart is ridden through instead of failing requests."""
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            socket_timeout=10,
            health_check_interval=15,
        )
        return cls(client, namespace, clock)

    def _run(self, script: str, *args: Any) -> Any:
        result = self._scripts[script](args=[self.ns, *args])
        self._changed()
        return result

    def _changed(self) -> None:
        """Tell waiting workers and API nodes that something changed (pub/sub: no state, nothing to clean up)."""
        self.redis.publish(f"{self.ns}events", "1")

    def wait_for_change(self, timeout_s: float) -> bool:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(f"{self.ns}events")
        try:
            message = self._pubsub.get_message(timeout=timeout_s)
            while message is not None and self._pubsub.get_message(timeout=0) is not None:
                pass
        except Exception:  # a Redis restart drops the subscription: start a new one next time
            self._pubsub = None
            return False
        return message is not None

    def _key(self, kind: str, job_id: str) -> str:
        return f"{self.ns}{kind}:{job_id}"

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        fields = self.redis.hgetall(self._key("job", job_id))
        return _fields_to_job(job_id, fields) if fields else None

    def queue_position(self, job_id: str) -> int | None:
        return self.redis.zrank(f"{self.ns}queue", job_id)

    def count_queued(self) -> int:
        return self.redis.zcard(f"{self.ns}queue")

    def logs(self, job_id: str) -> list[LogLine]:
        rows = self.redis.lrange(self._key("logs", job_id), 0, -1)
        return [LogLine(message=m, timestamp=ts, level=level) for m, ts, level in map(json.loads, rows)]

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]:
        return json.loads(self.redis.hget(self._key("hook", job_id), "attempts") or "[]")

    # -- the life of a job ---------------------------------------------------------------------------

    def submit(self, job: Job, admission: Admission | None = None) -> None:
        fields = {"app": job.app, "spec": json.dumps(job.spec.to_dict()), "created_at": _num(job.created_at),
                  "gateway_request_id": job.gateway_request_id, "blob_keys": "[]"}  # fmt: skip
        if job.start_deadline is not None:
            fields["start_deadline"] = _num(job.start_deadline)
        if job.webhook_url:
            fields["webhook_url"] = job.webhook_url
        if job.key_id:
            fields["key_id"] = job.key_id
        # Submitting the same id twice is a no-op, so a retry after a lost reply is safe.
        admission = admission or Admission()
        per_key = admission.max_queued_per_key or None  # 0: no cap
        outcome = self._scripts["submit"](args=[
            self.ns, job.id, json.dumps(fields), job.webhook_url or "",
            _cap(admission.max_queued), _cap(per_key),
        ])  # fmt: skip
        if outcome == 1:  # a refusal changes nothing: a flood of 429s wakes no waiter
            self._changed()
        elif outcome == -1:
            raise QueueFull("queue", admission.max_queued or 0)
        elif outcome == -2:
            raise QueueFull("key", per_key or 0)

    def claim(self, worker_id: str, lease_s: float, max_per_key: int = 0) -> Job | None:
        now = self._clock()
        chosen = self._fair_choice(max_per_key)
        if chosen is None:
            return None
        job_id = self._run(
            "claim", _num(now), _num(now + lease_s), worker_id, _allowed(JobStatus.RUNNING),
            _allowed(JobStatus.FAILED), json.dumps(JobError.start_timeout().to_dict()), chosen,
        )  # fmt: skip
        return self.get(job_id) if job_id else None

    def _fair_choice(self, max_per_key: int) -> str | None:
        """'' for plain FIFO (decided in the script), a job id chosen by fairness.pick, or None to wait.
        The script re-checks that the chosen job is still queued, so racing workers cannot both take it."""
        ids = self.redis.zrange(f"{self.ns}queue", 0, SCAN_FOR_BATCH - 1)
        if not ids:
            return ""
        keys = self._key_ids(ids)
        if not max_per_key and len(set(keys)) <= 1:
            return ""
        running_ids = self.redis.zrange(f"{self.ns}running", 0, -1)
        running: dict[str | None, int] = {}
        for key in self._key_ids(running_ids):
            running[key] = running.get(key, 0) + 1
        served = {k: float(v) for k, v in self.redis.hgetall(f"{self.ns}served").items()}
        return fairness.pick(list(zip(ids, keys)), running, served, max_per_key)

    def _key_ids(self, job_ids: list[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._key("job", job_id), "key_id")
        return pipe.execute()

    def claim_matching(self, worker_id: str, lease_s: float, key: dict[str, Any], limit: int) -> list[Job]:
        now = self._clock()
        ids = self._run(
            "claim_matching", _num(now), _num(now + lease_s), worker_id, _allowed(JobStatus.RUNNING),
            json.dumps(key), limit, SCAN_FOR_BATCH,
        )  # fmt: skip
        return [job for job in map(self.get, ids) if job is not None]

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        return self._run("renew", job_id, worker_id, _num(self._clock() + lease_s)) == 1

    def requeue_expired(self, max_attempts: int = 3) -> list[str]:
        template = json.dumps(JobError.worker_lost(0).to_dict()).replace(" 0 times", " {attempts} times")
        return self._run(
            "requeue", _num(self._clock()), max_attempts, _allowed(JobStatus.QUEUED), _allowed(JobStatus.FAILED),
            template,
        )  # fmt: skip

    def expire_start_deadlines(self) -> list[str]:
        error = json.dumps(JobError.start_timeout().to_dict())
        return self._run("expire_deadlines", _num(self._clock()), _allowed(JobStatus.FAILED), error)

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool:
        """Completion and its usage are recorded by one script: atomic, counted once."""
        owner = self.redis.hmget(self._key("job", job_id), ["key_id", "app"])
        now = self._clock()
        fields = {"output": json.dumps(output), "blob_keys": json.dumps(list(blob_keys))}
        usage_key = f"{owner[0] or ''}|{owner[1] or ''}"
        return self._run(
            "complete", job_id, _num(now), _allowed(JobStatus.COMPLETED), json.dumps(fields), usage_day(now),
            usage_key, len(output.get("images", [])), megapixels(output),
        ) == 1  # fmt: skip

    def fail(self, job_id: str, error: JobError) -> bool:
        return self._transition(job_id, JobStatus.FAILED, {"error": json.dumps(error.to_dict())})

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, JobStatus.CANCELLED, {})

    def append_log(self, job_id: str, line: LogLine) -> None:
        self.redis.rpush(self._key("logs", job_id), json.dumps([line.message, line.timestamp, line.level]))
        self._changed()

    def _transition(self, job_id: str, target: JobStatus, fields: dict[str, Any]) -> bool:
        now = _num(self._clock())
        return self._run("transition", job_id, target.value, now, _allowed(target), json.dumps(fields)) == 1

    # -- retention -----------------------------------------------------------------------------------

    def drop_output(self, job_id: str) -> None:
        self.redis.hdel(self._key("job", job_id), "output")

    def purge_finished(self, before: float) -> list[str]:
        return [key for keys in self._run("purge", _num(before)) for key in json.loads(keys)]

    # -- webhooks ------------------------------------------------------------------------------------

    def claim_webhooks(self, lease_s: float, limit: int = 16, max_attempts: int = 0) -> list[WebhookDelivery]:
        now = self._clock()
        lost = json.dumps(lost_attempt(0, now))
        rows = self._run("claim_hooks", _num(now), _num(now + lease_s), limit, max_attempts, lost)
        return [WebhookDelivery(job_id=i, url=url, attempts=json.loads(a or "[]")) for i, url, a in rows]

    def record_webhook_attempt(self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: str) -> bool:
        return self._run("record_hook", job_id, json.dumps(attempt), _num(next_at) or "", state) == 1

    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        # A sorted set scored by expiry: readers drop lapsed entries without trusting Redis' clock.
        self.redis.hset(f"{self.ns}workers", worker_id, json.dumps({"state": state, "stats": stats}))
        self.redis.zadd(f"{self.ns}worker_expiry", {worker_id: self._clock() + ttl_s})

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        live = self.redis.zrangebyscore(f"{self.ns}worker_expiry", self._clock(), "+inf")
        reports = self.redis.hmget(f"{self.ns}workers", live) if live else []
        return {w: json.loads(r) for w, r in sorted(zip(live, reports)) if r is not None}

    def worker_states(self) -> dict[str, str]:
        return {w: report["state"] for w, report in self.worker_reports().items()}

    def queue_stats(self) -> dict[str, float]:
        oldest = self.redis.zrange(f"{self.ns}queue", 0, 0)
        created = self.redis.hget(self._key("job", oldest[0]), "created_at") if oldest else None
        age = max(0.0, self._clock() - float(created)) if created else 0.0
        return {"depth": self.count_queued(), "oldest_age_s": age}

    # -- API keys and usage ------------------------------------------------------------------------------

    def create_key(self, key: ApiKey) -> None:
        self.redis.hset(self._key("key", key.key_id), mapping={
            "secret_sha256": key.secret_sha256, "name": key.name, "admin": int(key.admin),
            "created_at": _num(key.created_at), "revoked": 0})  # fmt: skip
        self.redis.zadd(f"{self.ns}keys", {key.key_id: key.created_at})

    def get_key(self, key_id: str) -> ApiKey | None:
        f = self.redis.hgetall(self._key("key", key_id))
        if not f:
            return None
        return ApiKey(key_id, f["secret_sha256"], f["name"], f["admin"] == "1", float(f["created_at"]),
                      f["revoked"] == "1")  # fmt: skip

    def list_keys(self) -> list[ApiKey]:
        return [k for k in map(self.get_key, self.redis.zrange(f"{self.ns}keys", 0, -1)) if k is not None]

    def revoke_key(self, key_id: str) -> bool:
        if not self.redis.exists(self._key("key", key_id)):
            return False
        self.redis.hset(self._key("key", key_id), "revoked", 1)
        return True

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for day in sorted(self.redis.smembers(f"{self.ns}usage_days")):
            for field, value in self.redis.hgetall(f"{self.ns}usage:{day}").items():
                owner, app, measure = field.split("|")
                if key_id is not None and owner != key_id:
                    continue
                row = rows.setdefault((day, owner, app), {"day": day, "key_id": owner, "app": app})
                row[measure] = int(value)
        return [rows[k] for k in sorted(rows)]

    def close(self) -> None:
        if self._pubsub is not None:
            self._pubsub.close()
        self.redis.close()


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _fields_to_job(job_id: str, f: dict[str, str]) -> Job:
    return Job(
        id=job_id,
        app=f["app"],
        spec=GenerationSpec.from_dict(json.loads(f["spec"])),
        status=JobStatus(f["status"]),
        created_at=float(f["created_at"]),
        started_at=_float(f.get("started_at")),
        finished_at=_float(f.get("finished_at")),
        output=json.loads(f["output"]) if f.get("output") else None,
        error=JobError.from_dict(json.loads(f["error"])) if f.get("error") else None,
        worker_id=f.get("worker_id"),
        lease_until=_float(f.get("lease_until")),
        attempts=int(f.get("attempts", 0)),
        start_deadline=_float(f.get("start_deadline")),
        gateway_request_id=f["gateway_request_id"],
        webhook_url=f.get("webhook_url"),
        blob_keys=json.loads(f.get("blob_keys") or "[]"),
        key_id=f.get("key_id"),
    )

