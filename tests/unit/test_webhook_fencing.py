"""At most max_attempts sends per webhook delivery, however many dispatchers (API nodes) share the store: the
claim counts the send, and a result is recorded only by the claim that handed out its attempt number. Run
against both stores; two dispatchers on one store stand for two API nodes."""

from __future__ import annotations

import pytest

from fluxserve.net.safe_http import Response
from fluxserve.net.webhook_dispatch import WebhookDispatcher
from fluxserve.net.webhooks import RetryPolicy, WebhookSigner
from fluxserve.store.protocols import LOST_ATTEMPT_ERROR
from tests.support.store_fixtures import clock, finished_with_webhook, store  # noqa: F401  (both backends)

pytestmark = pytest.mark.abuse

LEASE_S = 10


def attempt(number: int, status_code: int = 503) -> dict:
    return {"number": number, "at": 0.0, "status_code": status_code, "error": None, "duration_s": 0.1,
            "final": False}  # fmt: skip


def test_a_lapsed_claim_cannot_record_over_the_newer_attempt(store, clock):
    job = finished_with_webhook(store)
    (first,) = store.claim_webhooks(LEASE_S, max_attempts=5)
    assert first.attempts == []  # this dispatcher sends attempt 1 ... and outlives its lease
    clock.advance(LEASE_S + 1)
    (second,) = store.claim_webhooks(LEASE_S, max_attempts=5)
    (lost,) = second.attempts  # attempt 1 may have reached the receiver: it counts
    assert lost["number"] == 1 and lost["error"] == LOST_ATTEMPT_ERROR and lost["status_code"] is None
    assert store.record_webhook_attempt(job.id, attempt(2, 200), None, "delivered") is True
    assert store.record_webhook_attempt(job.id, attempt(1), clock() + 1, "pending") is False
    assert [a["number"] for a in store.webhook_attempts(job.id)] == [1, 2]
    clock.advance(1000)
    assert store.claim_webhooks(LEASE_S, max_attempts=5) == [], "delivered stays delivered"


def test_a_late_result_cannot_revive_a_failed_delivery(store, clock):
    job = finished_with_webhook(store)
    store.claim_webhooks(LEASE_S, max_attempts=2)
    clock.advance(LEASE_S + 1)
    store.claim_webhooks(LEASE_S, max_attempts=2)
    assert store.record_webhook_attempt(job.id, {**attempt(2, 404), "final": True}, None, "failed") is True
    assert store.record_webhook_attempt(job.id, attempt(1), clock(), "pending") is False
    clock.advance(1000)
    assert store.claim_webhooks(LEASE_S, max_attempts=2) == []
    assert store.purge_finished(before=clock()) == [] and store.get(job.id) is None, "failed: nothing left to send"


def test_claims_stop_at_max_attempts_when_every_lease_lapses(store, clock):
    job = finished_with_webhook(store)
    handed_out = 0
    for _ in range(10):  # each dispatcher dies mid-send; the next finds its lease run out
        handed_out += len(store.claim_webhooks(LEASE_S, max_attempts=3))
        clock.advance(LEASE_S + 1)
    assert handed_out == 3
    attempts = store.webhook_attempts(job.id)
    assert [a["number"] for a in attempts] == [1, 2, 3] and all(a["error"] == LOST_ATTEMPT_ERROR for a in attempts)
    assert store.purge_finished(before=clock() + 1) == [] and store.get(job.id) is None, "ended failed"


class SlowThenTakenOver:
    """A receiver that always answers 503. Its first delivery outlives the lease: while it is in flight the
    clock passes the lease and the other node's dispatcher runs (as a second API node would)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.posts: list[str] = []
        self.other: WebhookDispatcher | None = None
        self.policy = None

    def post(self, url: str, body: bytes, headers: dict) -> Response:
        self.posts.append(url)
        if len(self.posts) == 1 and self.other is not None:
            self.clock.advance(LEASE_S * 10)
            self.other.dispatch_due()
            self.other.wait_idle(10)
        return Response(status_code=503, headers={}, content=b"", url=url)


def test_two_nodes_send_a_delivery_at_most_max_attempts_times(store, clock):
    """The duplicate of the issue: node A's send outlives its lease, node B takes the delivery over. B's attempt
    is the last allowed one and fails it; A's late 'retry later' must neither add a send nor revive it."""
    job = finished_with_webhook(store)
    client = SlowThenTakenOver(clock)
    policy = RetryPolicy(max_attempts=2, first_delay_s=1, timeout_s=1)
    signer = WebhookSigner.generate()
    node_a, node_b = (WebhookDispatcher(store, client, signer, policy, clock=clock) for _ in range(2))
    client.other = node_b
    for _ in range(5):
        for node in (node_a, node_b):
            node.dispatch_due()
            assert node.wait_idle(10)
        clock.advance(100)
    assert len(client.posts) == 2
    attempts = store.webhook_attempts(job.id)
    assert [(a["number"], a["status_code"]) for a in attempts] == [(1, None), (2, 503)]
    assert store.get(job.id) is not None and store.purge_finished(before=clock()) == []
    assert store.get(job.id) is None, "failed, not pending: nothing left to send"
