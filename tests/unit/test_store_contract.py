"""The JobStore contract: every backend (SQLite, a real Redis) runs this same suite."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from fluxserve.core.jobs import Job, JobError, JobStatus, LogLine, Priority, RequestOptions, new_job_id
from fluxserve.store.scheduling import ClaimPolicy, batch_key
from fluxserve.store.sqlite import SQLiteJobStore
from tests.support.claiming import claim_one
from tests.support.scheduling_cases import CASES
from tests.support.specs import SPEC, make_spec
from tests.support.store_fixtures import clock, store  # noqa: F401  (both backends)


def submit(store, app="fal-ai/flux/schnell") -> Job:
    job = Job(id=new_job_id(), app=app, spec=SPEC)
    store.submit(job)
    return job


def test_submit_then_get(store):
    job = submit(store)
    got = store.get(job.id)
    assert got.status is JobStatus.QUEUED and got.spec == SPEC and got.app == job.app
    assert store.get("missing") is None


def test_claim_is_fifo_and_positions_count_jobs_ahead(store):
    jobs = [submit(store) for _ in range(3)]
    assert [store.queue_position(j.id) for j in jobs] == [0, 1, 2]
    claimed = claim_one(store, "w", lease_s=10)
    assert claimed.id == jobs[0].id and claimed.status is JobStatus.RUNNING and claimed.worker_id == "w"
    assert store.queue_position(jobs[0].id) is None
    assert [store.queue_position(j.id) for j in jobs[1:]] == [0, 1]


def prioritised(store, priority: Priority, key_id: str | None = None) -> Job:
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, key_id=key_id, priority=priority)
    store.submit(job)
    return job


def test_priority_is_stored_and_positions_count_the_jobs_that_run_first(store):
    """Every queued normal job is ahead of a low one; a normal job is never behind a low one."""
    low1 = prioritised(store, Priority.LOW)
    normal1 = prioritised(store, Priority.NORMAL)
    low2 = prioritised(store, Priority.LOW)
    normal2 = prioritised(store, Priority.NORMAL)
    assert store.get(low1.id).priority is Priority.LOW and store.get(normal1.id).priority is Priority.NORMAL
    order = [normal1, normal2, low1, low2]
    assert [store.queue_position(j.id) for j in order] == [0, 1, 2, 3]
    assert claim_one(store, "w", 10).id == normal1.id
    assert [store.queue_position(j.id) for j in order[1:]] == [0, 1, 2]
    late = prioritised(store, Priority.NORMAL)
    assert [store.queue_position(j.id) for j in (normal2, late, low1, low2)] == [0, 1, 2, 3]


def test_a_requeued_low_job_keeps_its_place_behind_normal_ones(store, clock):
    low = prioritised(store, Priority.LOW)
    assert claim_one(store, "dead", lease_s=5).id == low.id
    normal = prioritised(store, Priority.NORMAL)
    later_low = prioritised(store, Priority.LOW)
    clock.advance(6)
    assert store.requeue_expired() == [low.id]
    assert store.get(low.id).priority is Priority.LOW
    assert [store.queue_position(j.id) for j in (normal, low, later_low)] == [0, 1, 2]
    assert [claim_one(store, "w", 10).id for _ in range(3)] == [normal.id, low.id, later_low.id]


def test_claim_on_empty_queue(store):
    assert claim_one(store, "w", lease_s=10) is None


def test_complete_records_output_once(store):
    job = submit(store)
    claim_one(store, "w", 10)
    assert store.complete(job.id, {"images": []})
    assert not store.complete(job.id, {"images": ["again"]})
    assert not store.fail(job.id, JobError(500, "internal_error", "late"))
    got = store.get(job.id)
    assert got.status is JobStatus.COMPLETED and got.output == {"images": []} and got.finished_at


def test_fail_records_error(store):
    job = submit(store)
    claim_one(store, "w", 10)
    assert store.fail(job.id, JobError(500, "internal_error", "boom"))
    got = store.get(job.id)
    assert got.status is JobStatus.FAILED and got.error == JobError(500, "internal_error", "boom")


def test_queued_job_cannot_complete(store):
    job = submit(store)
    assert not store.complete(job.id, {})
    assert store.get(job.id).status is JobStatus.QUEUED


def test_cancel_wins_exactly_once_against_complete(store):
    job = submit(store)
    claim_one(store, "w", 10)
    results = []
    barrier = threading.Barrier(2)

    def race(action):
        barrier.wait()
        results.append(action())

    threads = [
        threading.Thread(target=race, args=(lambda: store.cancel(job.id),)),
        threading.Thread(target=race, args=(lambda: store.complete(job.id, {}),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert store.get(job.id).status in (JobStatus.CANCELLED, JobStatus.COMPLETED)


def test_expired_lease_requeues_at_its_old_place(store, clock):
    first, second = submit(store), submit(store)
    claim_one(store, "dead-worker", lease_s=5)
    clock.advance(4)
    assert store.requeue_expired() == []
    clock.advance(2)
    assert store.requeue_expired() == [first.id]
    assert store.queue_position(first.id) == 0 and store.queue_position(second.id) == 1
    assert claim_one(store, "w2", 5).id == first.id


def test_renewed_lease_is_not_requeued(store, clock):
    job = submit(store)
    claim_one(store, "w", lease_s=5)
    clock.advance(4)
    assert store.renew_lease(job.id, "w", 5)
    assert not store.renew_lease(job.id, "someone-else", 5)
    clock.advance(4)
    assert store.requeue_expired() == []


def test_logs_in_order(store):
    job = submit(store)
    for i in range(3):
        store.append_log(job.id, LogLine(message=f"step {i}", timestamp=float(i)))
    assert [line.message for line in store.logs(job.id)] == ["step 0", "step 1", "step 2"]


def test_append_logs_writes_several_jobs_lines_at_once_in_order(store):
    """A batch's step: one write carries every job's line; each job reads back only its own, in order."""
    a, b = submit(store), submit(store)
    store.append_logs([])
    store.append_logs([(a.id, LogLine(message="text encode", timestamp=1.0)),
                       (b.id, LogLine(message="text encode", timestamp=1.0)),
                       (a.id, LogLine(message="step 1/2", timestamp=2.0, level="PREVIEW"))])  # fmt: skip
    store.append_logs([(b.id, LogLine(message="step 1/2", timestamp=2.0))])
    assert store.logs(a.id) == [LogLine(message="text encode", timestamp=1.0),
                                LogLine(message="step 1/2", timestamp=2.0, level="PREVIEW")]  # fmt: skip
    assert [line.message for line in store.logs(b.id)] == ["text encode", "step 1/2"]


def test_change_signals_name_the_jobs_that_changed(store):
    """Waiters wake for their own job only: a submit, a claim, an end name theirs; a log line is named as a
    log change (a sync run sleeps through it, a stream of steps does not); a lease renewal names no job."""
    store.wait_for_change(0.01)  # subscribe (Redis) or bind the doorbell (SQLite) before the writes
    job, other = Job(id=new_job_id(), app="a", spec=SPEC), new_job_id()
    store.submit(job)
    heard = store.wait_for_change(1.0)
    assert heard and heard.touches(job.id) and not heard.touches(other) and not heard.every_job
    claim_one(store, "w", lease_s=10)
    assert store.wait_for_change(1.0).touches(job.id), "the claim"
    store.append_logs([(job.id, LogLine(message="step 1/2", timestamp=1.0))])
    heard = store.wait_for_change(1.0)
    assert heard and heard.touches(job.id, logs=True) and not heard.touches(job.id)
    assert store.renew_lease(job.id, "w", 10)
    heard = store.wait_for_change(1.0)
    assert not heard.touches(job.id, logs=True), "a renewal is in nobody's status"
    assert store.complete(job.id, {"images": []})
    assert store.wait_for_change(1.0).touches(job.id), "the end"


def test_jobs_survive_reopening(tmp_path, clock):
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore.open(path, clock=clock)
    job = submit(store)
    store.close()
    reopened = SQLiteJobStore.open(path, clock=clock)
    assert reopened.get(job.id).status is JobStatus.QUEUED
    reopened.close()


def test_jobs_survive_a_redis_restart(redis_server, clock):
    from fluxserve.store.redis import RedisJobStore

    store = RedisJobStore.open(redis_server.url, namespace=f"test-{uuid.uuid4().hex}:", clock=clock)
    queued, running = submit(store), submit(store)
    claim_one(store, "w", 10)  # claims `queued`: it was first
    redis_server.restart()
    assert store.get(queued.id).status is JobStatus.RUNNING, "the client reconnects by itself"
    assert store.queue_position(running.id) == 0
    store.close()


def test_submitting_the_same_job_twice_is_a_no_op(store):
    job = submit(store)
    store.submit(job)
    assert store.count_queued() == 1 and store.queue_position(job.id) == 0


def test_claims_are_counted_and_a_job_whose_workers_keep_dying_fails(store, clock):
    job = submit(store)
    for attempt in (1, 2):
        assert claim_one(store, f"w{attempt}", lease_s=5).attempts == attempt
        clock.advance(6)
        assert store.requeue_expired(max_attempts=3) == [job.id]
    claim_one(store, "w3", lease_s=5)
    clock.advance(6)
    assert store.requeue_expired(max_attempts=3) == []
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error.error_type == "runner_disconnected"
    assert "3 times" in failed.error.detail


def test_a_no_retry_job_fails_the_first_time_its_worker_dies(store, clock):
    retried = submit(store)
    once = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, options=RequestOptions(no_retry=True))
    store.submit(once)
    assert store.get(once.id).options.no_retry and not store.get(retried.id).options.no_retry
    claim_one(store, "w1", lease_s=5)
    claim_one(store, "w1", lease_s=5)
    clock.advance(6)
    assert store.requeue_expired(max_attempts=3) == [retried.id]
    failed = store.get(once.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error.error_type == "runner_disconnected" and "X-Fal-No-Retry" in failed.error.detail


def test_a_job_not_started_by_its_deadline_fails_with_fals_timeout(store, clock):
    late = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, start_deadline=clock() + 5)
    store.submit(late)
    on_time = submit(store)
    clock.advance(6)
    assert claim_one(store, "w", 10).id == on_time.id, "claim skips and fails jobs past their start deadline"
    got = store.get(late.id)
    assert got.status is JobStatus.FAILED and got.error.status_code == 504
    assert got.error.timeout_type == "user" and got.error.error_type == "request_timeout"


def test_count_queued(store):
    jobs = [submit(store) for _ in range(3)]
    claim_one(store, "w", 10)
    store.cancel(jobs[2].id)
    assert store.count_queued() == 1


def test_purge_removes_old_finished_jobs_and_returns_their_blobs(store, clock):
    old, young, running = submit(store), submit(store), submit(store)
    claim_one(store, "w", 100)
    store.complete(old.id, {"images": []}, blob_keys=["a.png", "b.png"])
    clock.advance(50)
    claim_one(store, "w", 100)
    store.complete(young.id, {"images": []}, blob_keys=["c.png"])
    claim_one(store, "w", 100)
    assert sorted(store.purge_finished(before=clock() - 10)) == ["a.png", "b.png"]
    assert store.get(old.id) is None and store.logs(old.id) == []
    assert store.get(young.id) is not None and store.get(running.id) is not None


def test_purge_keeps_jobs_with_a_webhook_still_to_send(store, clock):
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, webhook_url="http://h/hook")
    store.submit(job)
    store.cancel(job.id)
    clock.advance(100)
    assert store.purge_finished(before=clock()) == [] and store.get(job.id) is not None
    (delivery,) = store.claim_webhooks(lease_s=10)
    store.record_webhook_attempt(job.id, {"number": 1}, None, "delivered")
    store.purge_finished(before=clock())
    assert store.get(job.id) is None


def test_webhooks_are_claimed_once_finished_and_leased(store, clock):
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, webhook_url="http://h/hook")
    store.submit(job)
    assert store.claim_webhooks(lease_s=10) == [], "no webhook before the job ends"
    claim_one(store, "w", 10)
    store.complete(job.id, {"images": []})
    (delivery,) = store.claim_webhooks(lease_s=10)
    assert delivery.url == "http://h/hook" and delivery.attempts == []
    assert store.claim_webhooks(lease_s=10) == [], "leased to the first dispatcher"
    store.record_webhook_attempt(job.id, {"number": 1, "status_code": 500}, clock() + 30, "pending")
    assert store.claim_webhooks(lease_s=10) == [], "not due yet"
    clock.advance(31)
    (again,) = store.claim_webhooks(lease_s=10)
    assert again.attempts == [{"number": 1, "status_code": 500}]
    store.record_webhook_attempt(job.id, {"number": 2, "status_code": 200}, None, "delivered")
    clock.advance(1000)
    assert store.claim_webhooks(lease_s=10) == []
    assert [a["number"] for a in store.webhook_attempts(job.id)] == [1, 2]


def test_a_dead_dispatchers_delivery_is_claimed_again(store, clock):
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, webhook_url="http://h/hook")
    store.submit(job)
    store.cancel(job.id)
    assert len(store.claim_webhooks(lease_s=10)) == 1
    clock.advance(11)
    assert len(store.claim_webhooks(lease_s=10)) == 1


def test_drop_output_forgets_the_payloads_and_keeps_the_parameters(store):
    spec = make_spec(prompt="secret", image_url="data:x")
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell/redux", spec=spec)
    store.submit(job)
    claim_one(store, "w", 10)
    store.complete(job.id, {"images": ["data:..."]})
    store.drop_output(job.id)
    got = store.get(job.id)
    assert got.status is JobStatus.COMPLETED and got.output is None
    assert got.spec.prompt == "" and got.spec.image_url is None and got.spec.seed == job.spec.seed


def test_a_batch_claim_takes_the_oldest_compatible_jobs_and_counts_each_attempt(store):
    def make(**changes):
        job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=make_spec(acceleration="regular", **changes))
        store.submit(job)
        return job

    head = make()
    other_size = make(width=128)
    same = [make(prompt=f"p{i}") for i in range(3)]
    batch = store.claim("w", 10, ClaimPolicy(max_batch=3))
    assert [j.id for j in batch] == [head.id, same[0].id, same[1].id]
    assert all(j.status is JobStatus.RUNNING and j.worker_id == "w" and j.attempts == 1 for j in batch)
    assert store.queue_position(other_size.id) == 0 and store.queue_position(same[2].id) == 1
    fill = ClaimPolicy(max_batch=4, batch_key=batch_key(make_spec(width=999, acceleration="regular")))
    assert store.claim("w", 10, fill) == []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_scheduling_decision(store, clock, case):
    """The same table as the pure test_scheduling.py, through this backend's claim."""
    for served in case.history:
        job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, key_id=served.key)
        store.submit(job)
        assert claim_one(store, "earlier", 100).id == job.id
        if served.done:
            store.complete(job.id, {})
        clock.advance(1)
    names = {}
    for queued in case.queue:
        job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=queued.spec, key_id=queued.key,
                  priority=queued.priority)  # fmt: skip
        store.submit(job)
        names[job.id] = queued.name
    claimed = store.claim("w", 10, case.policy)
    assert tuple(names[job.id] for job in claimed) == case.expected
    assert all(job.status is JobStatus.RUNNING and job.worker_id == "w" for job in claimed)


def test_one_running_per_key_holds_for_a_batch_and_the_other_key_waits_no_longer(store):
    """Regression: the batch-mates of a key at max_running_per_key=1 were claimed past the limit (four of
    A's jobs ran while B's waited)."""
    a_jobs = [keyed(store, "A", make_spec(acceleration="regular", prompt=f"a{i}")) for i in range(4)]
    b_job = keyed(store, "B", make_spec(acceleration="regular", width=128))
    policy = ClaimPolicy(max_batch=4, max_running_per_key=1)
    assert [job.id for job in store.claim("w1", 10, policy)] == [a_jobs[0].id]
    assert [job.id for job in store.claim("w2", 10, policy)] == [b_job.id]
    assert store.claim("w3", 10, policy) == [], "A and B are at their limit"


def test_idle_claims_and_sweeps_signal_no_change(store):
    """An idle worker's own claim and requeue sweep change nothing, so they wake no waiter (itself included:
    on Redis they did, and an idle worker spun)."""
    store.wait_for_change(0.01)  # subscribe (Redis) or bind the doorbell (SQLite) before the writes
    keyed(store, "A")
    assert store.wait_for_change(1.0), "a submit is a change"
    assert len(store.claim("w", 10, ClaimPolicy(max_batch=1))) == 1
    assert store.wait_for_change(1.0), "a claim that took a job is a change"
    for _ in range(3):
        assert store.claim("w", 10, ClaimPolicy(max_batch=1)) == []
        assert store.requeue_expired() == []
        assert store.expire_start_deadlines() == []
    assert not store.wait_for_change(0.2)


def test_worker_states_lapse_without_reports(store, clock):
    store.report_worker("a", "warming", ttl_s=10)
    store.report_worker("b", "ready", ttl_s=30)
    assert store.worker_states() == {"a": "warming", "b": "ready"}
    store.report_worker("a", "ready", ttl_s=10)
    clock.advance(11)
    assert store.worker_states() == {"b": "ready"}


def test_worker_reports_carry_stats_and_queue_stats(store, clock):
    store.report_worker("w", "ready", ttl_s=10, stats={"images": 3})
    assert store.worker_reports() == {"w": {"state": "ready", "stats": {"images": 3}}}
    assert store.queue_stats() == {"depth": 0, "oldest_age_s": 0.0}
    first = Job(id=new_job_id(), app="a", spec=SPEC, created_at=clock())
    store.submit(first)
    clock.advance(5)
    submit(store)
    assert store.queue_stats() == {"depth": 2, "oldest_age_s": 5.0}
    claim_one(store, "w", 10)
    assert store.queue_stats()["depth"] == 1 and first


def test_api_keys(store, clock):
    from fluxserve.core.accounts import ApiKey

    store.create_key(ApiKey("k1", "hash1", "alice", False, clock()))
    clock.advance(1)
    store.create_key(ApiKey("k2", "hash2", "ops", True, clock()))
    assert store.get_key("k1") == ApiKey("k1", "hash1", "alice", False, clock() - 1)
    assert [k.key_id for k in store.list_keys()] == ["k1", "k2"] and store.get_key("k2").admin
    assert store.revoke_key("k1") and store.get_key("k1").revoked
    assert not store.revoke_key("nope") and store.get_key("nope") is None


def test_each_revocation_moves_the_key_generation_and_nothing_else_does(store, clock):
    # API nodes cache verified keys and drop them when this moves: a revocation that did not move it would be
    # honoured late, and other writes moving it would only empty the caches.
    from fluxserve.core.accounts import ApiKey

    start = store.key_generation()
    store.create_key(ApiKey("k1", "hash1", "alice", False, clock()))
    store.create_key(ApiKey("k2", "hash2", "bob", False, clock()))
    store.submit(Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, key_id="k1"))
    assert store.key_generation() == start
    assert store.revoke_key("k1") and store.key_generation() == start + 1
    assert not store.revoke_key("nope") and store.key_generation() == start + 1
    assert store.revoke_key("k2") and store.key_generation() == start + 2


def test_usage_counts_completed_jobs_in_megapixels_rounded_up(store, clock):
    def run(key_id, output, app="fal-ai/flux/schnell", end="complete"):
        job = Job(id=new_job_id(), app=app, spec=SPEC, key_id=key_id)
        store.submit(job)
        claim_one(store, "w", 10)
        if end == "complete":
            store.complete(job.id, output)
        else:
            store.fail(job.id, JobError(500, "internal_error", "x"))
        return job

    big = {"images": [{"url": "u", "content_type": "image/png", "width": 1024, "height": 1024}] * 2}
    small = {"images": [{"url": "u", "content_type": "image/png", "width": 512, "height": 512}]}
    run("alice", big)
    run("alice", small, app="fal-ai/flux/schnell/redux")
    run("bob", small)
    run("bob", big, end="fail")
    day = time.strftime("%Y-%m-%d", time.gmtime(clock()))
    assert store.usage("alice") == [
        {"day": day, "key_id": "alice", "app": "fal-ai/flux/schnell", "requests": 1, "images": 2, "megapixels": 4},
        {"day": day, "key_id": "alice", "app": "fal-ai/flux/schnell/redux", "requests": 1, "images": 1,
         "megapixels": 1},
    ]  # fmt: skip
    assert [r["key_id"] for r in store.usage()] == ["alice", "alice", "bob"]
    assert store.usage("bob")[0]["requests"] == 1, "the failed job is not counted"



def keyed(store, key_id, spec=SPEC):
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=spec, key_id=key_id)
    store.submit(job)
    return job


def test_a_flooding_key_does_not_starve_another(store, clock):
    flood = [keyed(store, "A") for _ in range(5)]
    single = keyed(store, "B")
    order = []
    for _ in range(3):
        job = claim_one(store, "w", 10)
        order.append(job.id)
        store.complete(job.id, {})
        clock.advance(1)
    assert order[:2] == [flood[0].id, single.id], "B's job runs right after the first of A's"
    assert order[2] == flood[1].id


def test_one_key_alone_stays_fifo(store):
    jobs = [keyed(store, "A") for _ in range(3)]
    assert [claim_one(store, "w", 10).id for _ in range(3)] == [j.id for j in jobs]


def test_a_key_at_its_concurrency_limit_waits(store, clock):
    a1, a2 = keyed(store, "A"), keyed(store, "A")
    b1 = keyed(store, "B")
    assert claim_one(store, "w1", 10, max_per_key=1).id == a1.id
    clock.advance(1)
    assert claim_one(store, "w2", 10, max_per_key=1).id == b1.id
    assert claim_one(store, "w3", 10, max_per_key=1) is None, "A and B are at their limit; a2 waits, not rejected"
    assert store.get(a2.id).status is JobStatus.QUEUED
    store.complete(a1.id, {})
    assert claim_one(store, "w3", 10, max_per_key=1).id == a2.id


# -- admission: the queue caps are checked in the insert's own transaction ---------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def handles(request, tmp_path, clock):
    """Opens any number of handles on one store, each with its own connection, as separate API nodes would."""
    from fluxserve.store.redis import RedisJobStore

    opened = []
    namespace = f"test-{uuid.uuid4().hex}:"

    def open_handle():
        if request.param == "sqlite":
            handle = SQLiteJobStore.open(tmp_path / "jobs.sqlite3", clock=clock)
        else:
            url = request.getfixturevalue("redis_server").url
            handle = RedisJobStore.open(url, namespace=namespace, clock=clock)
        opened.append(handle)
        return handle

    yield open_handle
    for handle in opened:
        handle.close()


def race_submits(handles, jobs, admission):
    """Submit every job at once, each from its own thread, spread over the handles: {job id: QueueFull}."""
    from fluxserve.store.protocols import QueueFull

    barrier = threading.Barrier(len(jobs))
    refused: dict[str, QueueFull] = {}

    def one(index, job):
        barrier.wait()
        try:
            handles[index % len(handles)].submit(job, admission)
        except QueueFull as exc:
            refused[job.id] = exc

    threads = [threading.Thread(target=one, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return refused


def test_the_queue_cap_holds_exactly_under_racing_submits(handles):
    from fluxserve.store.protocols import Admission

    nodes = [handles() for _ in range(6)]
    jobs = [Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC) for _ in range(60)]
    refused = race_submits(nodes, jobs, Admission(max_queued=10))
    assert len(refused) == 50 and nodes[0].count_queued() == 10, "check and insert are one transaction"
    assert {(exc.scope, exc.limit) for exc in refused.values()} == {("queue", 10)}
    assert all(nodes[0].get(job_id) is None for job_id in refused), "a refused submit stores nothing"


def test_one_keys_share_holds_under_racing_submits_and_leaves_room_for_others(handles):
    from fluxserve.store.protocols import Admission

    nodes = [handles() for _ in range(4)]
    admission = Admission(max_queued=100, max_queued_per_key=5)
    flood = [Job(id=new_job_id(), app="a", spec=SPEC, key_id="A") for _ in range(30)]
    refused = race_submits(nodes, flood, admission)
    assert len(refused) == 25 and {(e.scope, e.limit) for e in refused.values()} == {("key", 5)}
    nodes[0].submit(Job(id=new_job_id(), app="a", spec=SPEC, key_id="B"), admission)
    nodes[0].submit(Job(id=new_job_id(), app="a", spec=SPEC), admission)  # no key (auth off): no share
    assert nodes[0].count_queued() == 7


def test_a_keys_share_counts_only_its_queued_jobs(store, clock):
    from fluxserve.store.protocols import Admission, QueueFull

    admission = Admission(max_queued_per_key=2)

    def keyed_submit():
        job = Job(id=new_job_id(), app="a", spec=SPEC, key_id="A")
        store.submit(job, admission)
        return job

    first, second = keyed_submit(), keyed_submit()
    with pytest.raises(QueueFull):
        keyed_submit()
    claim_one(store, "w", lease_s=5)  # `first` runs: it no longer waits, so A has room for one more
    third = keyed_submit()
    with pytest.raises(QueueFull):
        keyed_submit()
    store.cancel(second.id)
    keyed_submit()
    clock.advance(6)
    assert store.requeue_expired() == [first.id]  # back in the queue: A is over its share, nothing is dropped
    assert store.get(first.id).status is JobStatus.QUEUED and store.get(third.id).status is JobStatus.QUEUED
    with pytest.raises(QueueFull):
        keyed_submit()


def test_a_resubmitted_id_is_a_no_op_even_when_the_queue_is_full(store):
    from fluxserve.store.protocols import Admission

    job = submit(store)
    store.submit(job, Admission(max_queued=1, max_queued_per_key=1))
    assert store.count_queued() == 1


def test_a_cap_of_zero_admits_nothing(store):
    from fluxserve.store.protocols import Admission, QueueFull

    with pytest.raises(QueueFull) as refused:
        store.submit(Job(id=new_job_id(), app="a", spec=SPEC), Admission(max_queued=0))
    assert refused.value.scope == "queue" and store.count_queued() == 0


def test_jobs_stored_before_priorities_read_as_normal(store, clock):
    """An older store holds jobs without a priority (SQLite: no column; Redis: no hash fields): each opens,
    reads as normal, and queues ahead of a low job submitted after the upgrade."""
    old = prioritised(store, Priority.NORMAL)
    running = prioritised(store, Priority.NORMAL)
    if isinstance(store, SQLiteJobStore):
        path = store._conns.path
        store.close()
        import sqlite3

        db = sqlite3.connect(path)
        # What a file from before priorities lacks: the column, its index, and the queue counters built on it.
        for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE queue_counts")
        db.execute("DROP TABLE queued_by_key")
        db.execute("DROP INDEX jobs_queue_order")
        db.execute("ALTER TABLE jobs DROP COLUMN priority")
        db.commit()
        db.close()
        store = SQLiteJobStore.open(path, clock=clock)
    else:
        for job in (old, running):
            store.redis.hdel(store._key("job", job.id), "priority", "queue_score")
    assert claim_one(store, "dead", lease_s=5).id == old.id
    low = prioritised(store, Priority.LOW)
    assert store.get(old.id).priority is Priority.NORMAL
    assert [store.queue_position(j.id) for j in (running, low)] == [0, 1]
    clock.advance(6)
    assert store.requeue_expired() == [old.id]
    assert [store.queue_position(j.id) for j in (old, running, low)] == [0, 1, 2]
    assert [claim_one(store, "w", 10).id for _ in range(3)] == [old.id, running.id, low.id]
    if isinstance(store, SQLiteJobStore):
        store.close()


def assert_status_view_agrees(store, job_id: str) -> None:
    """status_view, and status_view_async (the API's, on its loop), read what get, queue_position and logs
    read one by one."""
    for with_logs in (True, False):
        view = store.status_view(job_id, with_logs)
        assert view.job == store.get(job_id)
        assert view.position == store.queue_position(job_id)
        assert view.logs == (store.logs(job_id) if with_logs else None)
        assert async_status_view(store, job_id, with_logs) == view


def async_status_view(store, job_id: str, with_logs: bool):
    """status_view_async on a loop of its own, closed after (each call opens and closes its client)."""
    async def read():
        try:
            return await store.status_view_async(job_id, with_logs)
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_a_status_view_is_the_job_its_position_and_its_logs_read_together(store):
    low = prioritised(store, Priority.LOW)
    first, second = prioritised(store, Priority.NORMAL), prioritised(store, Priority.NORMAL)
    store.append_log(first.id, LogLine(message="queued a while", timestamp=1.0))
    assert [store.status_view(j.id, False).position for j in (first, second, low)] == [0, 1, 2]
    assert claim_one(store, "w", 10).id == first.id
    store.append_log(first.id, LogLine(message="step 1", timestamp=2.0, level="PREVIEW"))
    for job in (first, second, low):
        assert_status_view_agrees(store, job.id)
    view = store.status_view(first.id, True)
    assert view.job.status is JobStatus.RUNNING and view.position is None
    assert [(line.message, line.level) for line in view.logs] == [("queued a while", "INFO"),
                                                                  ("step 1", "PREVIEW")]  # fmt: skip
    assert store.complete(first.id, {"images": []})
    assert store.status_view(first.id, True).job.status is JobStatus.COMPLETED
    assert_status_view_agrees(store, first.id)
    assert store.status_view("missing", True) is None and store.status_view("missing", False) is None
    assert async_status_view(store, "missing", True) is None


def test_positions_depth_and_shares_stay_exact_over_a_long_queue(store, clock):
    """Over a thousand jobs (SQLite counts them in blocks of 1024), of two priorities and three keys, some
    claimed, cancelled or requeued: every position is the count of the jobs that run first, and the depth and
    each key's share are what admission sees."""
    from fluxserve.store.protocols import Admission, QueueFull

    keys = ("k0", "k1", "k2")
    jobs = [prioritised(store, Priority.LOW if i % 3 == 0 else Priority.NORMAL, keys[i % 7 % 3])
            for i in range(1300)]  # fmt: skip
    place = {job.id: i for i, job in enumerate(jobs)}  # submission order: a requeued job keeps its place
    queued = set(place)
    for job in jobs[5::9]:
        assert store.cancel(job.id)
        queued.discard(job.id)
    dead = [claim_one(store, "dead", lease_s=5) for _ in range(12)]
    queued -= {job.id for job in dead}
    clock.advance(6)
    assert sorted(store.requeue_expired()) == sorted(job.id for job in dead)
    queued |= {job.id for job in dead}
    for _ in range(8):
        queued.discard(claim_one(store, "w", lease_s=60).id)
    rank = {job.id: job.priority is Priority.NORMAL for job in jobs}

    def expected(job_id: str) -> int:
        return sum(1 for other in queued if (rank[other], -place[other]) > (rank[job_id], -place[job_id]))

    for job in jobs[::17] + jobs[1018:1030] + jobs[-3:]:
        assert store.status_view(job.id, False).position == (expected(job.id) if job.id in queued else None)
    assert store.count_queued() == len(queued)
    mine = sum(1 for job in jobs if job.id in queued and job.key_id == "k1")
    for full in (Admission(max_queued_per_key=mine), Admission(max_queued=len(queued))):
        with pytest.raises(QueueFull):
            store.submit(Job(id=new_job_id(), app="a", spec=SPEC, key_id="k1"), full)
    store.submit(Job(id=new_job_id(), app="a", spec=SPEC, key_id="k1"), Admission(len(queued) + 1, mine + 1))
    assert store.count_queued() == len(queued) + 1
