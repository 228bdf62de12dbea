"""Upkeep: retention removes old results (their files stay, to their own expiry); deadlines and dead workers
are handled."""

from __future__ import annotations

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.jobs import Job, JobStatus, new_job_id
from fluxserve.core.settings import LeaseSettings, UpkeepSettings
from fluxserve.processes.upkeep import Upkeep
from fluxserve.store.sqlite import SQLiteJobStore
from tests.support.claiming import claim_one
from tests.support.fakes import FakeClock
from tests.support.specs import SPEC


def test_retention_sweep_removes_results_but_not_their_files(tmp_path):
    clock = FakeClock()
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3", clock=clock)
    blobs = LocalBlobStore.open(tmp_path / "files")
    retention = UpkeepSettings(retention_s=3600, sweep_interval_s=60)
    upkeep = Upkeep(store, blobs, retention, LeaseSettings(), clock=clock)
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC)
    store.submit(job)
    claim_one(store, "w", 10)
    key = blobs.put(b"png", "image/png", "png")
    store.complete(job.id, {"images": [{"url": key}]}, blob_keys=[key])
    upkeep.tick()
    assert store.get(job.id) is not None and (tmp_path / "files" / key).exists()
    clock.advance(3601)
    upkeep.tick()
    assert store.get(job.id) is None, "the job record is purged"
    assert (tmp_path / "files" / key).exists(), "its file outlives it"


def test_tick_requeues_jobs_of_dead_workers_and_expires_deadlines(tmp_path):
    clock = FakeClock()
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3", clock=clock)
    blobs = LocalBlobStore.open(tmp_path / "f")
    upkeep = Upkeep(store, blobs, UpkeepSettings(), LeaseSettings(), clock=clock)
    dead = Job(id=new_job_id(), app="a", spec=SPEC)
    late = Job(id=new_job_id(), app="a", spec=SPEC, start_deadline=clock() + 1)
    store.submit(dead)
    store.submit(late)
    claim_one(store, "dead-worker", lease_s=5)
    clock.advance(6)
    upkeep.tick()
    assert store.get(dead.id).status is JobStatus.QUEUED
    assert store.get(late.id).status is JobStatus.FAILED


def test_upkeep_stops_again_and_again(tmp_path):
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    upkeep = Upkeep(store, LocalBlobStore.open(tmp_path / "f"), UpkeepSettings(), LeaseSettings())
    upkeep.start()
    for _ in range(5):
        upkeep.stop()
    assert not upkeep.loop.alive


def test_tick_fails_a_dead_workers_job_after_the_leases_max_attempts(tmp_path):
    clock = FakeClock()
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3", clock=clock)
    blobs = LocalBlobStore.open(tmp_path / "f")
    upkeep = Upkeep(store, blobs, UpkeepSettings(), LeaseSettings(max_attempts=1), clock=clock)
    job = Job(id=new_job_id(), app="a", spec=SPEC)
    store.submit(job)
    claim_one(store, "dead-worker", lease_s=5)
    clock.advance(6)
    upkeep.tick()
    assert store.get(job.id).status is JobStatus.FAILED
