"""A Redux job's image_url is fetched off the GPU thread: a slow fetch delays only its own job, while every
job the worker claimed still ends exactly once (fetch failure, cancel, stop, a suspect device, the bound)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.core.jobs import JobStatus
from fluxserve.net.image_inputs import ImageInputError, InputImage
from fluxserve.store.sqlite import SQLiteJobStore
from fluxserve.worker.loop import FatalWorkerError, Worker, WorkerConfig
from tests.support.fakes import FakeEngine, HeldBlobs
from tests.support.images import png_bytes
from tests.support.waits import wait_until
from tests.support.worker_rig import Rig

SLOW = "http://slow.example/cat.png"


class HeldImages:
    """The worker's ImageFetcher: loads of URLs starting with SLOW wait until `release` is set (like a server
    holding its response) and then `delays[url]` seconds more, `bad:` URLs are unusable, anything else is a
    small image at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.delays: dict[str, float] = {}
        self.started: list[str] = []
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def load(self, url: str, base_url: str) -> InputImage:
        with self.lock:
            self.started.append(url)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if url.startswith(SLOW):
                self.release.wait(30)
                threading.Event().wait(self.delays.get(url, 0.0))
            if url.startswith("bad:"):
                raise ImageInputError("could not be fetched: the server answered HTTP 404")
            colour, size = (10, 20, 30), (8, 8)
            return InputImage(Image.new("RGB", size, colour), png_bytes(colour, size), "image/png")
        finally:
            with self.lock:
                self.active -= 1


@dataclasses.dataclass
class PrefetchRig(Rig):
    images: HeldImages | None = None

    def redux(self, url: str, **fields: object) -> object:
        return self.submit("", kind="redux", image_url=url, **fields)

    def fetching(self, count: int) -> None:
        wait_until(lambda: len(self.images.started) >= count, what=f"{count} fetches to start")


def make_rig(tmp_path, **config: object) -> PrefetchRig:
    store = SQLiteJobStore.open(tmp_path / "jobs.sqlite3")
    blobs = HeldBlobs(LocalBlobStore.open(tmp_path / "files"))
    engine = FakeEngine(fail_on=("CUDA error: an illegal memory access",))
    images = HeldImages()
    settings = WorkerConfig(**{"worker_id": "w", "idle_sleep_s": 0.01, "lease_s": 0.3, **config})
    worker = Worker(store, blobs, engine, settings, images=images)
    return PrefetchRig(store, blobs, engine, worker, tmp_path / "files", images=images)


@pytest.fixture
def rig(tmp_path) -> Iterator[PrefetchRig]:
    rig = make_rig(tmp_path)
    yield rig
    rig.images.release.set()
    if rig.thread is not None:
        rig.join()
    rig.store.close()


def test_a_text_job_claimed_after_a_slow_fetch_runs_while_it_is_fetched(rig):
    slow = rig.redux(SLOW)
    text = rig.submit("a fox")
    rig.start()
    rig.fetching(1)
    wait_until(lambda: rig.status(text) is JobStatus.COMPLETED, timeout=5, what="the second job")
    assert rig.status(slow) is JobStatus.RUNNING and not rig.images.release.is_set()
    assert rig.generated() == ["a fox"], "the GPU ran the text job while the image was still being fetched"
    rig.images.release.set()
    wait_until(lambda: rig.status(slow) is JobStatus.COMPLETED, what="the Redux job once its image arrived")
    assert rig.engine.batches == [1, 1]
    assert [line.message for line in rig.store.logs(slow.id)][0] == "fetch image"


def test_the_lease_is_kept_while_the_image_is_fetched(rig):
    slow = rig.redux(SLOW)
    rig.start()
    rig.fetching(1)
    threading.Event().wait(1.0)  # three leases long, while the worker looks for expired leases between claims
    assert rig.store.requeue_expired(3) == []
    assert rig.status(slow) is JobStatus.RUNNING and rig.store.get(slow.id).attempts == 1
    rig.images.release.set()
    wait_until(lambda: rig.status(slow) is JobStatus.COMPLETED, what="the Redux job")
    assert rig.store.get(slow.id).attempts == 1


def test_an_unusable_image_url_fails_its_job_alone_with_a_422_while_a_slow_one_is_fetched(rig):
    slow, bad, text = rig.redux(SLOW), rig.redux("bad://nothing.png"), rig.submit("a fox")
    rig.start()
    wait_until(lambda: rig.status(bad).terminal and rig.status(text).terminal, timeout=5,
               what="the bad and the text job, behind the slow fetch")  # fmt: skip
    failed = rig.store.get(bad.id)
    assert failed.status is JobStatus.FAILED and failed.error.status_code == 422
    assert failed.error.error_type == "image_url_error"
    (item,) = failed.error.detail
    assert item["loc"] == ["body", "image_url"] and "HTTP 404" in item["msg"]
    assert rig.status(text) is JobStatus.COMPLETED and rig.status(slow) is JobStatus.RUNNING
    rig.images.release.set()
    wait_until(lambda: rig.status(slow) is JobStatus.COMPLETED, what="the slow job")
    assert rig.worker.stats.snapshot()["jobs"] == {"failed": 1, "completed": 2}


def test_a_bad_image_in_a_batch_fails_that_job_and_its_batch_mates_run_together(rig):
    jobs = [rig.redux(url, acceleration="regular", seed=i)
            for i, url in enumerate(["data:one", "bad://two", "data:three"])]  # fmt: skip
    rig.start()
    wait_until(lambda: all(rig.status(job).terminal for job in jobs), what="the batch")
    assert [rig.status(job) for job in jobs] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert rig.engine.batches == [2]


def test_a_job_cancelled_while_its_image_is_fetched_ends_cancelled_and_never_runs(rig):
    slow = rig.redux(SLOW)
    rig.start()
    rig.fetching(1)
    assert rig.store.cancel(slow.id)
    rig.images.release.set()
    wait_until(lambda: rig.worker.stats.snapshot()["jobs"] == {"cancelled": 1}, what="the worker to drop it")
    assert rig.status(slow) is JobStatus.CANCELLED
    assert rig.engine.calls == [], "the GPU never ran a cancelled job"
    assert list(rig.files.iterdir()) == []


def test_stop_while_an_image_is_fetched_runs_that_job_and_claims_nothing_more(rig):
    slow = rig.redux(SLOW)
    rig.start()
    rig.fetching(1)
    rig.worker.stop()
    later = rig.submit("submitted after the stop")
    threading.Event().wait(0.3)
    assert rig.thread.is_alive(), "the worker waits for the image it is fetching"
    assert rig.store.worker_states() == {"w": "ready"}
    rig.images.release.set()
    rig.thread.join(timeout=10)
    assert not rig.thread.is_alive()
    assert rig.status(slow) is JobStatus.COMPLETED and rig.status(later) is JobStatus.QUEUED
    assert rig.store.worker_states() == {"w": "stopping"}
    rig.thread = None


def test_a_suspect_device_leaves_the_jobs_being_fetched_to_their_leases(rig):
    slow, fatal = rig.redux(SLOW), rig.submit("CUDA error: an illegal memory access")
    rig.start()
    rig.thread.join(timeout=5)
    assert not rig.thread.is_alive(), "the fatal job ran while the image was fetched, and stopped the worker"
    assert isinstance(rig.failure, FatalWorkerError)
    assert rig.status(fatal) is JobStatus.RUNNING
    left = rig.store.get(slow.id)
    assert left.status is JobStatus.RUNNING and left.error is None, "no end written: its lease runs out"
    threading.Event().wait(0.4)
    assert sorted(rig.store.requeue_expired(3)) == sorted([slow.id, fatal.id]), "nobody renews their leases"
    rig.images.release.set()
    rig.thread = None


def test_a_bad_image_url_still_fails_with_its_422_when_its_batch_then_finds_the_device_suspect(rig):
    """Each job's outcome is decided once: the unusable image_url never reached the device, so the suspect
    device that leaves its batch-mate to its lease does not take the 422 back."""
    fatal = "CUDA error: an illegal memory access"
    good, bad = (rig.submit(fatal, kind="redux", image_url=url, acceleration="regular", seed=i)
                 for i, url in enumerate(["data:one", "bad://two"]))  # fmt: skip
    rig.start()
    rig.thread.join(timeout=5)
    assert isinstance(rig.failure, FatalWorkerError)
    assert rig.engine.batches == [1], "the batch reached the engine with its one usable job"
    failed = rig.store.get(bad.id)
    assert failed.status is JobStatus.FAILED and failed.error.status_code == 422
    left = rig.store.get(good.id)
    assert left.status is JobStatus.RUNNING and left.error is None, "no end written: its lease runs out"
    rig.thread = None


def test_no_more_jobs_are_claimed_than_can_be_fetched_at_once(tmp_path):
    rig = make_rig(tmp_path, fetch_concurrency=2)
    try:
        jobs = [rig.redux(f"{SLOW}?{i}", acceleration="regular", seed=i) for i in range(3)]
        text = rig.submit("a fox")
        rig.start()
        rig.fetching(2)
        threading.Event().wait(0.3)
        assert len(rig.images.started) == 2 and rig.status(jobs[2]) is JobStatus.QUEUED
        assert rig.status(text) is JobStatus.QUEUED, "the bound holds whatever the next job is"
        rig.images.release.set()
        wait_until(lambda: all(rig.status(job) is JobStatus.COMPLETED for job in [*jobs, text]), what="all")
        assert rig.images.most_active == 2
    finally:
        rig.images.release.set()
        rig.join()
        rig.store.close()


def test_redux_jobs_claimed_together_still_run_as_one_batch(tmp_path):
    rig = make_rig(tmp_path, batch_window_s=0.5, lease_s=5.0)  # a lease outlasting the batch window
    try:
        jobs = [rig.redux(f"{SLOW}?{i}", acceleration="regular", seed=i) for i in range(3)]
        rig.images.delays = {f"{SLOW}?{i}": 0.1 * i for i in range(3)}  # they arrive 0.1 s apart
        rig.start()
        rig.fetching(3)
        rig.images.release.set()
        wait_until(lambda: all(rig.status(job) is JobStatus.COMPLETED for job in jobs), what="the batch")
        assert rig.engine.batches == [3]
    finally:
        rig.join()
        rig.store.close()
