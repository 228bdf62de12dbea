"""The benchmark's queue backlog, written straight through fluxserve's store in bulk (one SQLite transaction,
one Redis pipeline), because 10⁵ submits one by one would take most of the benchmark's five minutes. The rows
are the store's own (records.new_job_fields, the Redis submit script), so the API reads them as any other job.

    python benchmarks/backlog.py <fluxserve flags>

reads one command a line, `DEPTH [ID ...]`: cancels the queued jobs named (the benchmark's own submits), then
queues jobs until DEPTH are queued in all, and answers a line: the id of the last one queued, or "-" when none
was needed. One process serves a whole run: starting Python for each would cost seconds a time.

Backlog jobs are low priority: a worker runs one only while no normal job waits (fake_worker.py --feed)."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from dataclasses import replace
from unittest.mock import patch

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.core.jobs import GenerationSpec, Job, JobStatus, Priority, new_job_id
from fluxserve.store import records
from fluxserve.store.open import open_store

REDIS_PIPELINE_CHUNK = 5000


def bench_job(rng: random.Random, priority: Priority = Priority.NORMAL) -> Job:
    """A small text job of 1-10 steps. acceleration=none runs alone, never batched: a batch being filled never
    takes a backlog job with it."""
    spec = GenerationSpec(kind="text", prompt="bench", width=16, height=16,
                          num_inference_steps=rng.randint(1, 10), seed=rng.randrange(2**32), num_images=1,
                          guidance_scale=3.5, enable_safety_checker=False, output_format="jpeg",
                          sync_mode=False, acceleration="none", base_url="http://127.0.0.1")  # fmt: skip
    return Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=spec, priority=priority)


def fill_sqlite(store, jobs: list[Job]) -> None:
    rows = [{**records.new_job_fields(job), "status": JobStatus.QUEUED.value} for job in jobs]
    names = list(rows[0])
    with store._write() as db:
        db.executemany(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                       [tuple(row[n] for n in names) for row in rows])  # fmt: skip


def fill_redis(store, jobs: list[Job]) -> None:
    """The store's own submit, its script calls queued on a pipeline instead of sent one by one."""
    pipe = store.redis.pipeline(transaction=False)
    scripts = store._scripts
    store._scripts = {name: pipe.register_script(script.script) for name, script in scripts.items()}
    try:
        for n, job in enumerate(jobs, 1):
            store.submit(job)
            if n % REDIS_PIPELINE_CHUNK == 0:
                pipe.execute()
        pipe.execute()
    finally:
        store._scripts = scripts


def fill(store, to: int) -> str | None:
    count = to - store.count_queued()
    if count <= 0:
        return None
    template = bench_job(random.Random(to), Priority.LOW)
    # Encoding a spec costs more than inserting its row: the backlog's jobs share one spec and differ only in
    # their ids, so the store's codec runs once and each row is that record with its own ids.
    fields = records.new_job_fields(template)
    jobs = [replace(template, id=new_job_id(), gateway_request_id=new_job_id()) for _ in range(count)]

    def encoded(job: Job) -> dict:
        return {**fields, "id": job.id, "gateway_request_id": job.gateway_request_id}

    with patch.object(records, "new_job_fields", encoded):
        (fill_redis if hasattr(store, "redis") else fill_sqlite)(store, jobs)
    return jobs[-1].id


def cancel(store, ids: Iterable[str]) -> int:
    return sum(store.cancel(job_id) for job_id in ids)


def main() -> None:
    rest = sys.argv[1:]
    store = open_store(settings_from_args(build_parser({}).parse_args(["worker", *rest])).store)
    try:
        for line in sys.stdin:
            depth, *ids = line.split()
            cancel(store, ids)
            print(fill(store, int(depth)) or "-", flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    main()
