-- The SQLite store's tables; applied at every open, so an older file gains what it lacks.
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
    key_id TEXT,
    -- scheduling.RANK of its x-fal-queue-priority (1: normal); its index is made at open (sqlite.py)
    priority INTEGER NOT NULL DEFAULT 1,
    -- jobs.RequestOptions as JSON (NULL: the defaults)
    options TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_key_started ON jobs (key_id, started_at);
CREATE INDEX IF NOT EXISTS jobs_key_status ON jobs (key_id, status);
-- Every claim fails the queued jobs past their start deadline first: found without reading the whole queue.
CREATE INDEX IF NOT EXISTS jobs_queued_deadline ON jobs (start_deadline) WHERE status = 'queued';
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
-- When a job of each API key ("" for jobs without one) was last claimed: the fairness rule's input.
CREATE TABLE IF NOT EXISTS served (
    key_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
-- Store-wide counters; `keys` counts revocations, which API nodes read to drop the keys they cached.
CREATE TABLE IF NOT EXISTS generations (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- The queued jobs counted per priority and per block of 1024 sequence numbers, and per API key, kept exact by
-- the triggers sqlite.py makes at open (and recounted there): a queue position, the queue's depth and a key's
-- share are read from a few counter rows plus at most one block of the index, instead of counting the queue.
CREATE TABLE IF NOT EXISTS queue_counts (
    priority INTEGER NOT NULL,
    block INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (priority, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queued_by_key (
    key_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
