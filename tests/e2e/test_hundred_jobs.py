"""100 jobs through the real fal_client, one of two workers killed halfway: every job ends, none is lost."""

from __future__ import annotations

import collections
import sqlite3
import time

import fal_client

from tests.support.procs import Cluster

APP = "fal-ai/flux/schnell"
JOBS = 100


def test_hundred_queued_jobs_survive_a_worker_killed_halfway(tmp_path, tiny_model_dir, monkeypatch):
    cluster = Cluster(tmp_path / "data", tiny_model_dir, "--lease-seconds", "1.5")
    try:
        cluster.start_api()
        victim = cluster.start_worker("victim")
        cluster.start_worker("survivor")
        monkeypatch.setenv("FAL_KEY", "anything")
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{cluster.url}/queue/")
        args = {"prompt": "a cat", "image_size": "square", "num_inference_steps": 4}
        handles = [fal_client.submit(APP, arguments={**args, "seed": i}) for i in range(JOBS)]
        deadline = time.monotonic() + 120
        while not isinstance(handles[JOBS // 2].status(), fal_client.Completed):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        victim.kill()
        db = sqlite3.connect(tmp_path / "data" / "jobs.sqlite3")
        killed_at = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'completed'").fetchone()[0]
        results = [h.get() for h in handles]  # raises if any job failed
        rows = db.execute("SELECT status, worker_id, attempts FROM jobs").fetchall()
        by_status = collections.Counter(r[0] for r in rows)
        by_worker = collections.Counter(r[1] for r in rows)
        retried = sum(1 for r in rows if r[2] > 1)
        print(f"\n{JOBS} jobs submitted; victim killed after {killed_at} completed; "
              f"end states {dict(by_status)}; finished by {dict(by_worker)}; started twice: {retried}")  # fmt: skip
        assert [r["seed"] for r in results] == list(range(JOBS))
        assert by_status == {"completed": JOBS}
        assert killed_at < JOBS, "the worker was killed while jobs were still queued"
    finally:
        cluster.stop()
