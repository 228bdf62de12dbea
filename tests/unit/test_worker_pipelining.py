"""The worker encodes and stores batch N's images while the engine runs batch N+1, and every job still ends in
exactly one terminal state: with a held blob store, a cancel, a failing store, a stop and a suspect device."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.jobs import JobStatus
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import FatalWorkerError, Worker, WorkerConfig
from tests.support.fakes import FakeEngine, HeldBlobs
from tests.support.waits import wait_until
from tests.support.worker_rig import Rig


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    blobs = HeldBlobs(LocalBlobStore.open(tmp_path / "files"))
    engine = FakeEngine(fail_on=("explode", "CUDA error: an illegal memory access"))
    worker = Worker(store, blobs, engine, WorkerConfig(worker_id="w", idle_sleep_s=0.01, lease_s=0.3))
    rig = Rig(store, blobs, engine, worker, tmp_path / "files")
    yield rig
    blobs.hold.set()
    if rig.thread is not None:
        rig.join()
    store.close()


def test_the_next_batch_runs_while_the_previous_one_is_stored(rig):
    first, second = rig.submit("first"), rig.submit("second")
    rig.blobs.hold.clear()
    rig.start()
    rig.blobs.waiting.wait(10)
    wait_until(lambda: rig.generated() == ["first", "second"], what="the engine to start the second batch")
    assert rig.status(first) is JobStatus.RUNNING, "its images are not stored yet"
    rig.blobs.hold.set()
    wait_until(lambda: rig.status(second) is JobStatus.COMPLETED, what="both jobs to complete")
    assert rig.status(first) is JobStatus.COMPLETED
    assert len(list(rig.files.iterdir())) == 2
    snapshot = rig.worker.stats.snapshot()
    assert snapshot["jobs"] == {"completed": 2} and snapshot["images"] == 2
    assert sum(snapshot["batch_sizes"]["counts"]) == 2


def test_at_most_one_batch_waits_for_a_slow_blob_store(rig):
    jobs = [rig.submit(name) for name in ("first", "second", "third")]
    rig.blobs.hold.clear()
    rig.start()
    wait_until(lambda: rig.generated() == ["first", "second"], what="the second batch")
    time.sleep(0.3)
    assert rig.generated() == ["first", "second"], "no third claimed while two batches wait on the store"
    assert rig.status(jobs[2]) is JobStatus.QUEUED
    rig.blobs.hold.set()
    wait_until(lambda: all(rig.status(job) is JobStatus.COMPLETED for job in jobs), what="all three")
    assert rig.generated() == ["first", "second", "third"]


def test_leases_are_renewed_until_the_images_are_stored(rig):
    first, second = rig.submit("first"), rig.submit("second")
    rig.blobs.hold.clear()
    rig.start()
    wait_until(lambda: rig.generated() == ["first", "second"], what="the second batch")
    time.sleep(1.0)  # three leases long, while the worker keeps looking for expired leases between batches
    assert rig.store.requeue_expired(3) == []
    assert rig.status(first) is JobStatus.RUNNING and rig.store.get(first.id).attempts == 1
    rig.blobs.hold.set()
    wait_until(lambda: rig.status(second) is JobStatus.COMPLETED, what="both jobs")
    assert rig.status(first) is JobStatus.COMPLETED and rig.store.get(first.id).attempts == 1


def test_a_job_cancelled_while_its_images_are_stored_ends_cancelled_and_keeps_no_files(rig):
    first, second = rig.submit("first"), rig.submit("second")
    rig.blobs.hold.clear()
    rig.start()
    wait_until(lambda: rig.generated() == ["first", "second"], what="the second batch")
    assert rig.store.cancel(first.id)
    rig.blobs.hold.set()
    wait_until(lambda: rig.status(second) is JobStatus.COMPLETED, what="the second job")
    rig.join()
    assert rig.status(first) is JobStatus.CANCELLED and rig.store.get(first.id).output is None
    assert len(list(rig.files.iterdir())) == 1, "only the second job's image is kept"
    assert rig.worker.stats.snapshot()["jobs"] == {"cancelled": 1, "completed": 1}


def test_a_store_failure_fails_that_job_alone_and_its_batch_mates_complete(rig):
    jobs = [rig.submit(f"p{i}", acceleration="regular", seed=i) for i in range(3)]
    rig.blobs.fail_next = OSError("bucket unreachable")
    rig.start()
    wait_until(lambda: all(rig.status(job).terminal for job in jobs), what="the batch")
    assert rig.engine.batches == [3]
    ends = [rig.store.get(job.id) for job in jobs]
    assert [end.status for end in ends] == [JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert ends[0].error.status_code == 500 and ends[0].error.error_type == "internal_error"
    assert ends[0].error.detail == "Generation failed: OSError: bucket unreachable"
    assert len(list(rig.files.iterdir())) == 2


def test_stop_delivers_every_batch_handed_over_before_the_worker_says_it_stops(rig):
    first, second = rig.submit("first"), rig.submit("second")
    rig.blobs.hold.clear()
    rig.start()
    wait_until(lambda: rig.generated() == ["first", "second"], what="the second batch")
    for _ in range(3):
        rig.worker.stop()
    time.sleep(0.2)
    assert rig.thread.is_alive(), "the worker waits for its deliveries"
    assert rig.store.worker_states() == {"w": "ready"}
    rig.blobs.hold.set()
    rig.thread.join(timeout=10)
    assert not rig.thread.is_alive()
    assert rig.status(first) is JobStatus.COMPLETED and rig.status(second) is JobStatus.COMPLETED
    assert rig.store.worker_states() == {"w": "stopping"}


def test_a_suspect_device_leaves_its_batch_to_the_lease_and_the_batch_before_is_still_stored(rig):
    first, fatal = rig.submit("first"), rig.submit("CUDA error: an illegal memory access")
    rig.blobs.hold.clear()
    rig.start()
    wait_until(lambda: rig.generated() == ["first", fatal.spec.prompt], what="the fatal batch")
    time.sleep(0.1)
    assert rig.thread.is_alive(), "the worker delivers the batch before it before it gives up"
    rig.blobs.hold.set()
    rig.thread.join(timeout=10)
    assert isinstance(rig.failure, FatalWorkerError)
    assert rig.status(first) is JobStatus.COMPLETED
    left = rig.store.get(fatal.id)
    assert left.status is JobStatus.RUNNING and left.error is None, "no end written: its lease runs out"
    time.sleep(0.4)
    assert rig.store.requeue_expired(3) == [fatal.id], "nobody renews its lease any more"
    assert rig.worker.stats.snapshot()["jobs"] == {"completed": 1}
    rig.thread = None


def test_a_sync_mode_job_gets_a_data_uri_and_stores_nothing(rig):
    job = rig.submit("inline", sync_mode=True)
    rig.start()
    wait_until(lambda: rig.status(job) is JobStatus.COMPLETED, what="the job")
    image = rig.store.get(job.id).output["images"][0]
    assert image["url"].startswith("data:image/jpeg;base64,") and list(rig.files.iterdir()) == []


class HeldProvenance:
    """The worker's real provenance stage, held until `release` is set; records the thread it ran on."""

    def __init__(self) -> None:
        import threading

        from fluxserve.provenance.stamp import Provenance

        self.real = Provenance.in_memory()
        self.release, self.entered, self.threads = threading.Event(), threading.Event(), []

    def stamp(self, *args, **kwargs):
        import threading

        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10), "never released"
        return self.real.stamp(*args, **kwargs)


def test_the_provenance_stage_runs_off_the_engines_thread_while_the_next_batch_runs(tmp_path):
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    provenance = HeldProvenance()
    worker = Worker(store, HeldBlobs(LocalBlobStore.open(tmp_path / "files")), FakeEngine(),
                    WorkerConfig(worker_id="w", idle_sleep_s=0.01), provenance=provenance)  # fmt: skip
    rig = Rig(store, worker.blobs, worker.engine, worker, tmp_path / "files")
    first, second = rig.submit("first"), rig.submit("second")
    rig.start()
    try:
        assert provenance.entered.wait(10)
        wait_until(lambda: rig.generated() == ["first", "second"], what="the engine to run the second batch")
        assert rig.status(first) is JobStatus.RUNNING, "its marks are not applied yet"
        provenance.release.set()
        wait_until(lambda: rig.status(second) is JobStatus.COMPLETED, what="both jobs to complete")
        assert set(provenance.threads) == {"delivery"}
        assert "provenance" in store.get(first.id).output["timings"]
    finally:
        provenance.release.set()
        rig.join()
        store.close()
