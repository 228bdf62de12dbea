-- The Redis store's scripts, each atomic on the server. Everything above the first "-- script:" line is
-- shared by every script; each script's ARGV is listed under its name. Every script but submit returns
-- {changed, value}: changed is 1 when it wrote something, and only then does the store publish a change
-- signal (an idle worker's claims and sweeps wake nobody, not even itself).

-- Change a job's status if the transition table allows it, and keep the indexes true. 1 when it happened.
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
    local score = redis.call('HGET', key, 'queue_score') or redis.call('HGET', key, 'seq')
    redis.call('ZADD', ns .. 'queue', score, id)
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

local function changed(flag)
  if flag then return 1 end
  return 0
end

-- script: transition
-- ARGV: ns, id, target, now, allowed, fields(json)
local done = transition(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], cjson.decode(ARGV[6]))
return {done, done}

-- script: complete
-- ARGV: ns, id, now, allowed, fields(json), day, usage_key, images, megapixels
local ns = ARGV[1]
if transition(ns, ARGV[2], 'completed', ARGV[3], ARGV[4], cjson.decode(ARGV[5])) == 0 then return {0, 0} end
local usage = ns .. 'usage:' .. ARGV[6]
redis.call('SADD', ns .. 'usage_days', ARGV[6])
redis.call('HINCRBY', usage, ARGV[7] .. '|requests', 1)
redis.call('HINCRBY', usage, ARGV[7] .. '|images', ARGV[8])
redis.call('HINCRBY', usage, ARGV[7] .. '|megapixels', ARGV[9])
return {1, 1}

-- script: submit
-- ARGV: ns, id, fields(json), webhook_url ('' for none), max_queued ('' for none), max_queued_per_key
-- ('' for none), priority offset (added to the sequence number: the queue score, see redis.py). The caps
-- are checked by the same script as the insert: atomic across every API node.
-- Returns 1 (inserted), 0 (the id exists: a no-op), -1 (the queue is full), -2 (the key's share is full).
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
local score = seq + tonumber(ARGV[7])
redis.call('HSET', key, 'seq', seq, 'queue_score', score, 'status', 'queued', 'attempts', 0)
redis.call('ZADD', ns .. 'queue', score, id)
if fields['start_deadline'] then redis.call('ZADD', ns .. 'deadlines', fields['start_deadline'], id) end
if ARGV[4] ~= '' then
  redis.call('HSET', ns .. 'hook:' .. id, 'url', ARGV[4], 'state', 'pending', 'attempts', '[]')
end
return 1

-- script: status_view
-- ARGV: ns, id, with_logs ('1' or ''). A status read in one command, atomic: {fields (HGETALL's flat list),
-- rank (-1: not queued), logs (empty unless asked)}. Reads only.
local ns, id = ARGV[1], ARGV[2]
local fields = redis.call('HGETALL', ns .. 'job:' .. id)
local rank = redis.call('ZRANK', ns .. 'queue', id) or -1
local logs = {}
if ARGV[3] == '1' then
  logs = redis.call('LRANGE', ns .. 'logs:' .. id, 0, -1)
end
return {0, {fields, rank, logs}}

-- script: candidates
-- ARGV: ns, count. The first `count` queued jobs, each as {id, key_id, spec, start_deadline, priority}: one
-- command instead of one HMGET per job (a pipeline of 256 of those cost a claim 29 ms at 10**5 queued).
-- Reads only.
local ns = ARGV[1]
local rows = {}
for _, id in ipairs(redis.call('ZRANGE', ns .. 'queue', 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', ns .. 'job:' .. id, 'key_id', 'spec', 'start_deadline', 'priority')
  table.insert(rows, {id, f[1] or '', f[2] or '', f[3] or '', f[4] or ''})
end
return {0, rows}

-- script: claim
-- ARGV: ns, now, lease_until, worker, allowed_running, allowed_failed, deadline_error, ids(json: the plan).
-- A planned job another worker took meanwhile (or one past its start deadline) is skipped.
local ns, now = ARGV[1], ARGV[2]
local expired = expire_deadlines(ns, now, ARGV[6], ARGV[7])
local claimed = {}
for _, id in ipairs(cjson.decode(ARGV[8])) do
  local fields = {started_at = now, worker_id = ARGV[4], lease_until = ARGV[3]}
  if transition(ns, id, 'running', now, ARGV[5], fields) == 1 then
    redis.call('HSET', ns .. 'served', redis.call('HGET', ns .. 'job:' .. id, 'key_id') or '', now)
    table.insert(claimed, id)
  end
end
return {changed(#expired + #claimed > 0), {claimed, expired}}

-- script: expire_deadlines
-- ARGV: ns, now, allowed_failed, deadline_error
local expired = expire_deadlines(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {changed(#expired > 0), expired}

-- script: renew
-- ARGV: ns, id, worker, lease_until
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'running' or redis.call('HGET', key, 'worker_id') ~= ARGV[3] then
  return {0, 0}
end
redis.call('HSET', key, 'lease_until', ARGV[4])
redis.call('ZADD', ARGV[1] .. 'running', ARGV[4], ARGV[2])
return {1, 1}

-- script: requeue
-- ARGV: ns, now, allowed_queued, allowed_failed, expired(json: {id: {attempts, error}}), read and decided by
-- the caller just before (error: the failure it ends with, "" to queue it again; core/jobs.worker_lost_error);
-- a job whose attempts changed since (another sweep got it first) is skipped.
local ns, now = ARGV[1], ARGV[2]
local requeued, failed = {}, 0
for id, seen in pairs(cjson.decode(ARGV[5])) do
  local lease = redis.call('ZSCORE', ns .. 'running', id)
  local attempts = tonumber(redis.call('HGET', ns .. 'job:' .. id, 'attempts') or '0')
  if lease and tonumber(lease) < tonumber(now) and attempts == tonumber(seen['attempts']) then
    if seen['error'] ~= '' then
      failed = failed + transition(ns, id, 'failed', now, ARGV[4], {error = seen['error']})
    elseif transition(ns, id, 'queued', now, ARGV[3], {worker_id = cjson.null, lease_until = cjson.null}) == 1
    then
      table.insert(requeued, id)
    end
  end
end
return {changed(#requeued + failed > 0), requeued}

-- script: purge
-- ARGV: ns, before
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
return {changed(#keys > 0), keys}

-- script: claim_hooks
-- ARGV: ns, now, lease_until, limit, max_attempts (0: none), lost attempt template (json)
-- A hook still carrying lease_until was claimed and never recorded: that attempt counts (see protocols.py).
local ns = ARGV[1]
local out = {}
local wrote = false
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ns .. 'hooks', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])) do
  local hook = ns .. 'hook:' .. id
  local raw = redis.call('HGET', hook, 'attempts') or '[]'
  wrote = true
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
return {changed(wrote), out}

-- script: record_hook
-- ARGV: ns, id, attempt(json), next_at ('' for none), state. Fenced: 0 unless this is the claimed attempt.
local ns, id = ARGV[1], ARGV[2]
local hook = ns .. 'hook:' .. id
if redis.call('HGET', hook, 'state') ~= 'pending' or redis.call('HEXISTS', hook, 'lease_until') == 0 then
  return {0, 0}
end
local attempts = cjson.decode(redis.call('HGET', hook, 'attempts') or '[]')
local attempt = cjson.decode(ARGV[3])
if tonumber(attempt['number']) ~= #attempts + 1 then return {0, 0} end
table.insert(attempts, attempt)
redis.call('HSET', hook, 'attempts', cjson.encode(attempts), 'state', ARGV[5])
redis.call('HDEL', hook, 'lease_until')
if ARGV[5] == 'pending' then redis.call('ZADD', ns .. 'hooks', ARGV[4], id)
else redis.call('ZREM', ns .. 'hooks', id) end
return {1, 1}
