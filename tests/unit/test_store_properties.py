"""The job store's transitions as a state machine, driven by hypothesis against SQLite and a real Redis.

A simple model (a dict of jobs) predicts what every operation must do; after each step every job's status,
attempts, worker and queue position are read back from the store and compared, and the usage the store
accounted is compared with the jobs the model saw complete. A terminal job never changes, a running job has
exactly one worker, and every status change seen follows jobs.TRANSITIONS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)  # fmt: skip

from fluxserve.core.accounts import megapixels
from fluxserve.core.jobs import GenerationSpec, Job, JobError, JobStatus, can_transition, new_job_id
from fluxserve.store.protocols import Admission, QueueFull
from fluxserve.store.scheduling import Candidate, ClaimPolicy, KeyLoad, batch_key, plan
from fluxserve.store.sqlite import SQLiteJobStore
from tests.support.fakes import FakeClock
from tests.support.specs import SPEC

APP = "fal-ai/flux/schnell"
KEYS = [None, "A", "B"]
WORKERS = ["w1", "w2", "w3"]
LEASE_S = 10.0
# Batchable specs (acceleration other than "none") of two sizes, so a batch claim has something to choose.
SPECS = [replace(SPEC, acceleration="regular", width=w) for w in (64, 128)]
OUTPUT = {"images": [{"url": "u", "content_type": "image/png", "width": 1024, "height": 1024}] * 2}
# Derandomized, with no example database: every run tries the same 30 sequences, so a failure in CI is the
# same failure on a laptop (a replayed example from another version of these rules cannot mislead either).
PROPERTIES = settings(max_examples=30, stateful_step_count=50, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@dataclass
class Model:
    key: str | None
    spec: GenerationSpec
    seq: int
    status: JobStatus = JobStatus.QUEUED
    worker: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    completions: int = 0  # times the store reported this job's completion: must stay 0 or 1


class StoreMachine(RuleBasedStateMachine):
    """One example: a fresh store, a fresh clock, and a model of what the store must hold."""

    open_store = None  # set per backend: clock -> a new, empty store

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = type(self).open_store(self.clock)
        self.model: dict[str, Model] = {}
        self.seen: dict[str, tuple[JobStatus, int]] = {}  # what the store last said: status, attempts
        self.next_seq = 0
        self.served: dict[str | None, float] = {}  # when a job of each key was last claimed

    def teardown(self) -> None:
        self.store.close()

    # -- helpers ---------------------------------------------------------------------------------------

    def queued(self) -> list[str]:
        return sorted((i for i, m in self.model.items() if m.status is JobStatus.QUEUED),
                      key=lambda i: self.model[i].seq)  # fmt: skip

    def take(self, job_id: str, worker: str) -> None:
        m = self.model[job_id]
        assert m.status is JobStatus.QUEUED, "a job is claimed only from the queue, by one worker at a time"
        m.status, m.worker, m.lease_until = JobStatus.RUNNING, worker, self.clock() + LEASE_S
        m.attempts += 1

    def end(self, job_id: str, status: JobStatus) -> None:
        m = self.model[job_id]
        m.status, m.worker, m.lease_until = status, None, None

    # -- rules -----------------------------------------------------------------------------------------

    @rule(target=jobs, key=st.sampled_from(KEYS), spec=st.sampled_from(SPECS),
          cap=st.none() | st.integers(0, 4), share=st.none() | st.integers(0, 3))  # fmt: skip
    def submit(self, key, spec, cap, share):
        job = Job(id=new_job_id(), app=APP, spec=spec, key_id=key, created_at=self.clock())
        queued = self.queued()
        mine = sum(1 for i in queued if self.model[i].key == key)
        refused = "queue" if cap is not None and len(queued) >= cap \
            else "key" if share and key and mine >= share else None  # fmt: skip
        try:
            self.store.submit(job, Admission(max_queued=cap, max_queued_per_key=share))
        except QueueFull as exc:
            assert exc.scope == refused, (exc.scope, refused)
            assert self.store.get(job.id) is None, "a refused submit stores nothing"
            return job.id  # stays unknown to the model: every later call on it must find nothing
        assert refused is None, f"admitted past the {refused} cap"
        self.model[job.id] = Model(key=key, spec=spec, seq=self.next_seq)
        self.next_seq += 1
        self.store.submit(job)  # the same id again: a no-op
        return job.id

    @rule(target=jobs, key=st.sampled_from(KEYS), spec=st.sampled_from(SPECS))
    def submit_uncapped(self, key, spec):
        """Most submits fit: a queue a few jobs deep is where positions and fairness can go wrong."""
        return self.submit(key, spec, cap=None, share=None)

    @rule(worker=st.sampled_from(WORKERS), max_batch=st.integers(1, 3), max_per_key=st.sampled_from([0, 1, 2]),
          fill=st.none() | st.sampled_from(SPECS))  # fmt: skip
    def claim(self, worker, max_batch, max_per_key, fill):
        """The store claims exactly what scheduling.plan decides from the model's own account of the queue,
        the running jobs and when each key was last served: both stores gather the same inputs."""
        policy = ClaimPolicy(max_batch, max_per_key, batch_key=fill and batch_key(fill))
        candidates = [Candidate.of(i, self.model[i].key, self.model[i].spec) for i in self.queued()]
        running: dict[str | None, int] = {}
        for m in self.model.values():
            if m.status is JobStatus.RUNNING:
                running[m.key] = running.get(m.key, 0) + 1
        expected = plan(candidates, KeyLoad(running, dict(self.served)), policy)
        claimed = self.store.claim(worker, LEASE_S, policy)
        assert [job.id for job in claimed] == expected
        for job in claimed:
            self.take(job.id, worker)
            self.served[self.model[job.id].key] = self.clock()
            assert job.status is JobStatus.RUNNING and job.worker_id == worker

    @rule(job_id=jobs)
    def complete(self, job_id):
        m = self.model.get(job_id)
        done = self.store.complete(job_id, OUTPUT)
        assert done == (m is not None and m.status is JobStatus.RUNNING)
        if done:
            self.end(job_id, JobStatus.COMPLETED)
            m.completions += 1

    @rule(job_id=jobs)
    def fail(self, job_id):
        m = self.model.get(job_id)
        done = self.store.fail(job_id, JobError(500, "internal_error", "boom"))
        assert done == (m is not None and m.status in (JobStatus.QUEUED, JobStatus.RUNNING))
        if done:
            self.end(job_id, JobStatus.FAILED)

    @rule(job_id=jobs)
    def cancel(self, job_id):
        m = self.model.get(job_id)
        done = self.store.cancel(job_id)
        assert done == (m is not None and m.status in (JobStatus.QUEUED, JobStatus.RUNNING))
        if done:
            self.end(job_id, JobStatus.CANCELLED)

    @rule(job_id=jobs, worker=st.sampled_from(WORKERS))
    def renew_lease(self, job_id, worker):
        m = self.model.get(job_id)
        renewed = self.store.renew_lease(job_id, worker, LEASE_S)
        assert renewed == (m is not None and m.status is JobStatus.RUNNING and m.worker == worker)
        if renewed:
            m.lease_until = self.clock() + LEASE_S

    # The same operations aimed at running jobs: most of the bundle's jobs soon end, and a running job is
    # where the interesting races are (completion, accounting, an expired lease).
    def running(self) -> list[str]:
        return sorted(i for i, m in self.model.items() if m.status is JobStatus.RUNNING)

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def complete_a_running_job(self, data):
        self.complete(data.draw(st.sampled_from(self.running())))

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def cancel_a_running_job(self, data):
        self.cancel(data.draw(st.sampled_from(self.running())))

    @precondition(lambda self: self.running())
    @rule(data=st.data(), max_attempts=st.integers(1, 3))
    def let_a_lease_run_out(self, data, max_attempts):
        """A worker dies: time passes beyond its lease (others may renew first), then the sweep runs."""
        for job_id in data.draw(st.lists(st.sampled_from(self.running()), unique=True, max_size=2)):
            self.renew_lease(job_id, self.model[job_id].worker)
        self.clock.advance(LEASE_S / 2)
        self.requeue_expired(max_attempts)
        self.clock.advance(LEASE_S / 2 + 1)
        self.requeue_expired(max_attempts)

    @rule(seconds=st.sampled_from([1.0, 4.0, 11.0]))
    def advance_clock(self, seconds):
        self.clock.advance(seconds)

    @rule(max_attempts=st.integers(1, 3))
    def requeue_expired(self, max_attempts):
        now = self.clock()
        expired = [i for i, m in self.model.items() if m.status is JobStatus.RUNNING and m.lease_until < now]
        requeued = self.store.requeue_expired(max_attempts=max_attempts)
        assert sorted(requeued) == sorted(i for i in expired if self.model[i].attempts < max_attempts)
        for job_id in expired:
            if self.model[job_id].attempts >= max_attempts:
                self.end(job_id, JobStatus.FAILED)
            else:
                m = self.model[job_id]
                m.status, m.worker, m.lease_until = JobStatus.QUEUED, None, None

    # -- invariants, checked after every step ----------------------------------------------------------

    @invariant()
    def every_job_is_where_the_model_says(self):
        for job_id, m in self.model.items():
            job = self.store.get(job_id)
            assert job is not None and job.status is m.status, (job_id, job and job.status, m.status)
            assert job.attempts == m.attempts
            if m.status is JobStatus.RUNNING:
                assert job.worker_id == m.worker and job.lease_until == pytest.approx(m.lease_until)
            else:
                assert job.lease_until is None
            if m.status is JobStatus.QUEUED:
                assert job.worker_id is None
            last = self.seen.get(job_id)
            if last is not None:
                status, attempts = last
                assert status is job.status or can_transition(status, job.status), (status, job.status)
                assert not (status.terminal and status is not job.status), "a terminal job never changes"
                assert job.attempts >= attempts, "attempts never decrease"
            self.seen[job_id] = (job.status, job.attempts)

    @invariant()
    def queue_positions_count_the_jobs_ahead(self):
        queued = self.queued()
        for position, job_id in enumerate(queued):
            assert self.store.queue_position(job_id) == position
        for job_id, m in self.model.items():
            if m.status is not JobStatus.QUEUED:
                assert self.store.queue_position(job_id) is None
        assert self.store.count_queued() == len(queued) == self.store.queue_stats()["depth"]

    @invariant()
    def each_completion_is_accounted_exactly_once(self):
        assert all(m.completions <= 1 for m in self.model.values())
        for key in KEYS:
            done = sum(m.completions for m in self.model.values() if m.key == key)
            rows = self.store.usage(key or "")
            assert sum(r["requests"] for r in rows) == done
            assert sum(r["images"] for r in rows) == done * len(OUTPUT["images"])
            assert sum(r["megapixels"] for r in rows) == done * megapixels(OUTPUT)


def sqlite_opener(folder: Path):
    def open_store(clock):
        return SQLiteJobStore.open(folder / f"{uuid.uuid4().hex}.sqlite3", clock=clock)

    return open_store


def redis_opener(url: str):
    from fluxserve.store.redis import RedisJobStore

    class Cleaned(RedisJobStore):
        """A fresh namespace per example, deleted when the example ends: the shared server stays small."""

        def close(self) -> None:
            for name in self.redis.scan_iter(match=f"{self.ns}*"):
                self.redis.delete(name)
            super().close()

    def open_store(clock):
        base = RedisJobStore.open(url, namespace=f"props-{uuid.uuid4().hex}:", clock=clock)
        return Cleaned(base.redis, base.ns, clock)

    return open_store


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_store_follows_its_model_through_any_sequence_of_operations(backend, request, tmp_path):
    if backend == "sqlite":
        opener = sqlite_opener(tmp_path)
    else:
        opener = redis_opener(request.getfixturevalue("redis_server").url)
    machine = type(f"{backend.title()}StoreMachine", (StoreMachine,), {"open_store": staticmethod(opener)})
    run_state_machine_as_test(machine, settings=PROPERTIES)
