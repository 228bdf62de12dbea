"""Deliver webhooks of finished jobs, outside the worker: generation and cancel never wait on a receiver.

Deliveries live in the job store, so a dispatcher that dies loses nothing: its lease on a delivery runs out
and another dispatcher (any API process) sends it. Each attempt is recorded on the job.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from fluxserve.background import Periodic
from fluxserve.jobs import Job, JobStatus, WebhookDelivery
from fluxserve.queue.base import JobStore
from fluxserve.webhooks import RetryPolicy, WebhookSigner, deliver_once, webhook_body

log = logging.getLogger(__name__)

# fal sends the id of the user who submitted; fluxserve has no accounts yet.
DEFAULT_USER_ID = "fluxserve"


def body_for(job: Job) -> dict[str, Any]:
    error = job.error_or_cancel
    return webhook_body(
        job.id,
        job.gateway_request_id,
        output=job.output if error is None else None,
        error_status=error.status_code if error else None,
        error_body=error.body if error else None,
    )


class WebhookDispatcher:
    def __init__(
        self,
        store: JobStore,
        client: Any,
        signer: WebhookSigner,
        policy: RetryPolicy,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.client, self.signer, self.policy = store, client, signer, policy
        self.clock = clock
        self.loop = Periodic("webhooks", poll_interval_s, self.dispatch_due)
        self.start, self.stop = self.loop.start, self.loop.stop

    def dispatch_due(self) -> int:
        # The lease covers one attempt's worst case, so a slow receiver is never sent the same attempt twice.
        deliveries = self.store.claim_webhooks(lease_s=self.policy.timeout_s * 2 + 5)
        for delivery in deliveries:
            self.attempt(delivery)
        return len(deliveries)

    def attempt(self, delivery: WebhookDelivery) -> None:
        job = self.store.get(delivery.job_id)
        if job is None:
            return
        number = len(delivery.attempts) + 1
        result = deliver_once(
            self.client, delivery.url, body_for(job), self.signer, job.id, DEFAULT_USER_ID,
            clock=self.clock, number=number,
        )  # fmt: skip
        if result.succeeded:
            state, next_at = "delivered", None
        elif self.policy.should_retry(result):
            state, next_at = "pending", self.clock() + self.policy.delay_after(number)
        else:
            state, next_at = "failed", None
        self.store.record_webhook_attempt(job.id, result.to_dict(), next_at, state)
        log.info("webhook %s attempt %d -> %s (%s)", job.id, number, state, result.status_code or result.error)
        if state != "pending" and job.spec.sync_mode and job.status is JobStatus.COMPLETED:
            self.store.drop_output(job.id)  # sync_mode results are not kept once handed over
