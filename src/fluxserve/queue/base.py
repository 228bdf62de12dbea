"""The JobStore interface every backend implements with the same semantics (one contract test suite)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from fluxserve.jobs import ApiKey, Job, JobError, LogLine, WebhookDelivery


class JobStore(Protocol):
    # -- reads
    def get(self, job_id: str) -> Job | None: ...

    def queue_position(self, job_id: str) -> int | None:
        """Jobs queued ahead of this one, or None when it is not queued."""

    def count_queued(self) -> int: ...

    def logs(self, job_id: str) -> list[LogLine]: ...

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]: ...

    # -- the life of a job; every status change follows jobs.TRANSITIONS and returns whether it happened
    def submit(self, job: Job) -> None:
        """Record a new queued job (and its webhook, if any). Ids are unique across apps."""

    def claim(self, worker_id: str, lease_s: float, max_per_key: int = 0) -> Job | None:
        """Atomically move the next queued job (FIFO; fair across API keys, see fairness.py) to running, leased
        to this worker; count the attempt. Queued jobs past their start deadline are failed first.
        max_per_key: a key with that many running jobs waits (0: no limit)."""

    def claim_matching(self, worker_id: str, lease_s: float, key: dict[str, Any], limit: int) -> list[Job]:
        """Claim up to `limit` of the oldest queued jobs whose spec fields equal `key` (cross-request
        batching); each claim counts as an attempt, as in claim()."""

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool: ...

    def requeue_expired(self, max_attempts: int = 3) -> list[str]:
        """Give running jobs whose lease ran out back to the queue (their worker died), or fail them once
        they have been attempted max_attempts times."""

    def expire_start_deadlines(self) -> list[str]: ...

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool: ...

    def fail(self, job_id: str, error: JobError) -> bool: ...

    def cancel(self, job_id: str) -> bool: ...

    def append_log(self, job_id: str, line: LogLine) -> None: ...

    # -- retention
    def drop_output(self, job_id: str) -> None: ...

    def purge_finished(self, before: float) -> list[str]:
        """Delete jobs finished before `before` with no webhook left to send; return their blob keys."""

    # -- webhooks
    def claim_webhooks(self, lease_s: float, limit: int = 16) -> list[WebhookDelivery]: ...

    def record_webhook_attempt(
        self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: str
    ) -> None: ...

    # -- workers, for readiness
    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        """Record a worker's state ("warming", "ready", "stopping") and its metrics snapshot; the report lapses
        after ttl_s without another."""

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        """{worker id: {"state", "stats"}} for the workers that reported within their ttl."""

    def worker_states(self) -> dict[str, str]: ...

    def queue_stats(self) -> dict[str, float]:
        """{"depth": queued requests, "oldest_age_s": age of the oldest queued one (0 when none)}."""

    def wait_for_change(self, timeout_s: float) -> bool:
        """Block until any process changes the store (or timeout_s passes): waiters re-read at once instead of
        polling. True when woken by a change."""

    # -- API keys and usage
    def create_key(self, key: ApiKey) -> None: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str) -> bool: ...

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of {day, key_id ("" without auth), app, requests, images, megapixels}, recorded when a job
        completes (failed and cancelled jobs are not counted)."""

    def close(self) -> None: ...
