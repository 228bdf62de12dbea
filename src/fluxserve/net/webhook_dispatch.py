"""Deliver webhooks of finished jobs, outside the worker: generation and cancel never wait on a receiver.

Deliveries live in the job store, so a dispatcher that dies loses nothing: its lease on a delivery runs out
and another dispatcher (any API process) sends it. Each attempt is recorded on the job, and the store fences
the record by attempt number, so across any number of API nodes a delivery is sent at most max_attempts times.

Each delivery is sent on a thread of its own, at most `concurrency` at once, and the dispatcher claims only as
many as it has free slots: a slow receiver holds one slot, never another key's webhook, and a claimed delivery
starts at once instead of waiting in a local line while its lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from fluxserve.core.jobs import DeliveryState, Job, JobStatus, LogLine, WebhookDelivery
from fluxserve.core.periodic import Periodic
from fluxserve.core.settings import WebhookSettings
from fluxserve.net.webhooks import (
    Attempt,
    RetryPolicy,
    WebhookSigner,
    WebhookTargets,
    deliver_once,
    webhook_body,
)
from fluxserve.store.protocols import JobStore

log = logging.getLogger(__name__)

# fal sends the id of the user who submitted: here the id of the key that submitted; a job submitted with auth
# off has no key and gets this one.
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


def attempt_log_line(url: str, attempt: Attempt, state: DeliveryState, retry_in_s: float | None) -> LogLine:
    """The line added to the job's logs (GET .../status?logs=1) for one attempt. Only the target's origin is
    shown: a webhook URL's path and query often carry the receiver's own secret."""
    parts = urlsplit(url)
    answered = attempt.status_code is not None
    outcome = f"HTTP {attempt.status_code}" if answered else (attempt.error or "no answer")
    if retry_in_s is not None:
        then = f"retrying in {retry_in_s:g} s"
    else:
        then = "delivered" if state is DeliveryState.DELIVERED else "given up"
    message = f"webhook attempt {attempt.number} to {parts.scheme}://{parts.netloc}: {outcome}; {then}"
    return LogLine(message=message, timestamp=attempt.at, level="INFO" if attempt.succeeded else "WARNING")


class WebhookDispatcher:
    def __init__(
        self,
        store: JobStore,
        client: Any,
        signer: WebhookSigner,
        policy: RetryPolicy,
        poll_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        concurrency: int = WebhookSettings.concurrency,
    ) -> None:
        if concurrency < 1:
            raise ValueError("webhook concurrency must be at least 1")
        self.store, self.client, self.signer, self.policy = store, client, signer, policy
        self.clock = clock
        self.concurrency = concurrency
        self._in_flight = 0
        self._idle = threading.Condition()
        self.loop = Periodic("webhooks", poll_interval_s, self.dispatch_due)
        self.start = self.loop.start

    @property
    def targets(self) -> WebhookTargets:
        """The submit-time check of webhook URLs, under the very policy this dispatcher's client sends with."""
        return WebhookTargets(self.client.policy)

    @property
    def lease_s(self) -> float:
        # One attempt's worst case (SafeClient's total deadline is timeout_s) with room to record it; a claim
        # is made only for a free slot, so the send starts as soon as it is leased.
        return self.policy.timeout_s * 2 + 5

    def dispatch_due(self) -> int:
        """Claim what free slots allow and start sending each on its own thread; the number started."""
        with self._idle:
            free = self.concurrency - self._in_flight
        if free <= 0:
            return 0
        deliveries = self.store.claim_webhooks(
            self.lease_s, limit=free, max_attempts=self.policy.max_attempts
        )  # fmt: skip
        for delivery in deliveries:
            with self._idle:
                self._in_flight += 1
            threading.Thread(target=self._send, args=(delivery,), name="webhook", daemon=True).start()
        return len(deliveries)

    def _send(self, delivery: WebhookDelivery) -> None:
        try:
            self.attempt(delivery)
        except Exception:  # a store error: the lease runs out and the delivery is claimed again (counted)
            log.exception("webhook %s: the attempt could not be recorded", delivery.job_id)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Until no delivery is in flight (or timeout_s passes); True when idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)

    def stop(self) -> None:
        """Stop claiming, and give sends in flight their time limit to finish and be recorded (an unrecorded
        one would count as a lost attempt)."""
        self.loop.stop()
        self.wait_idle(self.policy.timeout_s + 1)

    def attempt(self, delivery: WebhookDelivery) -> None:
        """Send one claimed delivery once and record it. Its number follows the attempts already recorded,
        lost ones included (the store's fence checks the same number)."""
        job = self.store.get(delivery.job_id)
        if job is None:
            return
        number = len(delivery.attempts) + 1
        result = deliver_once(
            self.client, delivery.url, body_for(job), self.signer, job.id, job.key_id or DEFAULT_USER_ID,
            clock=self.clock, number=number,
        )  # fmt: skip
        delay = None
        if result.succeeded:
            state = DeliveryState.DELIVERED
        elif self.policy.should_retry(result):
            state, delay = DeliveryState.PENDING, self.policy.delay_after(number)
        else:
            state = DeliveryState.FAILED
        next_at = None if delay is None else self.clock() + delay
        if not self.store.record_webhook_attempt(job.id, result.to_dict(), next_at, state):
            # Our lease ran out and another dispatcher took the delivery over: its attempt is on record.
            # (This send still counted: the claim that took it over recorded ours as lost.)
            log.warning("webhook %s attempt %d finished after its lease; not recorded", job.id, number)
            return
        self.store.append_log(job.id, attempt_log_line(delivery.url, result, state, delay))
        answer = result.status_code or result.error
        log.info("webhook %s attempt %d -> %s (%s)", job.id, number, state.value, answer)
        if state is not DeliveryState.PENDING and job.handed_out_once and job.status is JobStatus.COMPLETED:
            self.store.drop_output(job.id)  # not kept once handed over
