"""What the stores offer, split by who uses it: the job queue (API and workers), the webhook outbox (the
dispatcher), the worker registry (workers report, /ready and metrics read) and the key store (auth, usage, the
`keys` command). Every backend implements all four as one JobStore, with the same semantics (one contract
test suite)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fluxserve.core.accounts import ApiKey
from fluxserve.core.errors import FluxserveError
from fluxserve.core.jobs import DeliveryState, Job, JobError, LogLine, WebhookDelivery
from fluxserve.store.changes import Changes
from fluxserve.store.scheduling import ClaimPolicy


@dataclass(frozen=True)
class Admission:
    """The caps a new job must fit under, checked in the same transaction as its insert: two submits racing
    for the last place cannot both get it, on one node or many."""

    # Admitted only while fewer than this many jobs are queued (None: no cap).
    max_queued: int | None = None
    # ... and fewer than this many of its own API key's (None or 0: no cap; a job without a key is exempt).
    max_queued_per_key: int | None = None


class QueueFull(FluxserveError):
    """A submit refused by its Admission. scope: "queue" (every key's jobs) or "key" (the submitter's own)."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"{scope} cap of {limit} queued requests reached")
        self.scope = scope
        self.limit = limit


# The attempt recorded for a claim whose dispatcher never reported (it died, or outlived its lease): it counts
# against max_attempts, since the receiver may have got it. Same fields as webhooks.Attempt.to_dict().
LOST_ATTEMPT_ERROR = "no result recorded: the dispatcher sending it stopped or outlived its lease"


def lost_attempt(number: int, at: float) -> dict[str, Any]:
    return {"number": number, "at": at, "status_code": None, "error": LOST_ATTEMPT_ERROR, "duration_s": 0.0,
            "final": False}  # fmt: skip


@dataclass(frozen=True)
class StatusView:
    """What a status read answers, from one consistent read: the job, its exact queue position (None unless
    queued) and its log lines (None unless asked for)."""

    job: Job
    position: int | None
    logs: list[LogLine] | None


class JobQueue(Protocol):
    # -- reads
    def get(self, job_id: str) -> Job | None: ...

    def status_view(self, job_id: str, with_logs: bool) -> StatusView | None:
        """The job, its queue_position() and (with_logs) its logs(), read together in one store call: a status
        poll costs one round trip, and the three agree with each other. None when there is no such job."""

    async def status_view_async(self, job_id: str, with_logs: bool) -> StatusView | None:
        """status_view, awaited on the API's event loop with no thread-pool hop (the hop cost more CPU than the
        read): SQLite reads in place (local_reads), Redis through an asyncio client on one script."""

    async def aclose(self) -> None:
        """Close what status_view_async opened on the running loop (before close(), on that loop)."""

    def queue_position(self, job_id: str) -> int | None:
        """Jobs queued ahead of this one, or None when it is not queued."""

    def count_queued(self) -> int: ...

    def queue_stats(self) -> dict[str, float]:
        """{"depth": queued requests, "oldest_age_s": age of the oldest queued one (0 when none)}."""

    def logs(self, job_id: str) -> list[LogLine]: ...

    # -- the life of a job; every status change follows jobs.TRANSITIONS and returns whether it happened
    def submit(self, job: Job, admission: Admission | None = None) -> None:
        """Record a new queued job (and its webhook, if any). Ids are unique across apps; submitting an id
        that exists is a no-op. Raises QueueFull, inserting nothing, when the job does not fit under
        `admission`."""

    def claim(self, worker_id: str, lease_s: float, policy: ClaimPolicy) -> list[Job]:
        """Atomically move the queued jobs scheduling.plan picks under `policy` (one batch; [] when none may
        run) to running, leased to this worker; each claim counts an attempt. Queued jobs past their start
        deadline are failed first."""

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool: ...

    def requeue_expired(self, max_attempts: int = 3) -> list[str]:
        """Give running jobs whose lease ran out back to the queue (their worker died), or fail them once
        they have been attempted max_attempts times."""

    def expire_start_deadlines(self) -> list[str]: ...

    def complete(self, job_id: str, output: dict[str, Any], blob_keys: Iterable[str] = ()) -> bool: ...

    def fail(self, job_id: str, error: JobError) -> bool: ...

    def cancel(self, job_id: str) -> bool: ...

    def append_log(self, job_id: str, line: LogLine) -> None: ...

    def append_logs(self, entries: Iterable[tuple[str, LogLine]]) -> None:
        """Several jobs' log lines in one write (one transaction, one change signal): a batch's step."""

    # -- retention
    def drop_output(self, job_id: str) -> None:
        """Forget a finished job's payloads once handed out (Job.handed_out_once): its output, and the prompt
        and image_url in its spec."""

    def purge_finished(self, before: float) -> list[str]:
        """Delete jobs finished before `before` with no webhook left to send; return their blob keys."""

    def wait_for_change(self, timeout_s: float) -> Changes:
        """Block until a write in any process changes the store (or timeout_s passes): waiters re-read at once
        instead of polling. A write that changes nothing (an idle claim, an empty sweep) wakes nobody. The
        Changes name the jobs that changed (store/changes.py); they are false after a timeout."""


class WebhookOutbox(Protocol):
    """At most max_attempts sends per delivery, however many dispatchers (API nodes) run."""

    def claim_webhooks(self, lease_s: float, limit: int = 16, max_attempts: int = 0) -> list[WebhookDelivery]:
        """Lease up to `limit` due deliveries of finished jobs, one attempt each: the attempt to make is number
        len(delivery.attempts) + 1. A lease that ran out unreported is recorded as lost_attempt() (it may have
        been sent) before the delivery is handed out again; one with max_attempts (0: no limit) is failed."""

    def record_webhook_attempt(
        self, job_id: str, attempt: dict[str, Any], next_at: float | None, state: DeliveryState
    ) -> bool:
        """Record attempt (webhooks.Attempt.to_dict()) and the delivery's new state: pending (again at
        next_at), delivered or failed. Fenced: refused (False) unless attempt["number"] is the attempt the
        delivery's current claim handed out, so a late dispatcher cannot overwrite a newer one or revive a
        finished delivery."""

    def webhook_attempts(self, job_id: str) -> list[dict[str, Any]]: ...


class WorkerRegistry(Protocol):
    """Workers report here; readiness and metrics read it."""

    def report_worker(self, worker_id: str, state: str, ttl_s: float, stats: dict[str, Any] | None = None) -> None:
        """Record a worker's state ("warming", "ready", "stopping") and its metrics snapshot; the report lapses
        after ttl_s without another."""

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        """{worker id: {"state", "stats"}} for the workers that reported within their ttl."""

    def worker_states(self) -> dict[str, str]: ...


class KeyStore(Protocol):
    """API keys and what each has used."""

    def create_key(self, key: ApiKey) -> None: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str) -> bool:
        """Mark the key revoked and bump key_generation, in one write, so every API node's cache of verified
        keys drops it before its next request."""

    # True where reads are served from this machine's disk, with no network wait (SQLite): cheap and bounded
    # enough for the API to make on its event loop.
    local_reads: bool

    def key_generation(self) -> int:
        """A store-wide count of revocations, read before trusting a cached key: one indexed read or one
        Redis GET, never waiting for a writer, so the API reads it on every authenticated request."""

    def usage(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of {day, key_id ("" without auth), app, requests, images, megapixels}, recorded when a job
        completes (failed and cancelled jobs are not counted)."""


class JobStore(JobQueue, WebhookOutbox, WorkerRegistry, KeyStore, Protocol):
    """The whole store, as each backend implements it and open_store returns it."""

    def close(self) -> None: ...
