"""The JobStore interface every backend implements with the same semantics (one contract test suite)."""

from __future__ import annotations

from typing import Any, Protocol

from fluxserve.jobs import Job, JobError, LogLine


class JobStore(Protocol):
    def submit(self, job: Job) -> None:
        """Record a new queued job. Ids are unique across apps."""

    def get(self, job_id: str) -> Job | None: ...

    def queue_position(self, job_id: str) -> int | None:
        """Jobs queued ahead of this one, or None when it is not queued."""

    def claim(self, worker_id: str, lease_s: float) -> Job | None:
        """Atomically move the oldest queued job to running, leased to this worker."""

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool: ...

    def requeue_expired(self) -> list[str]:
        """Give running jobs whose lease ran out back to the queue (their worker died)."""

    def complete(self, job_id: str, output: dict[str, Any]) -> bool: ...

    def fail(self, job_id: str, error: JobError) -> bool: ...

    def cancel(self, job_id: str) -> bool: ...

    def append_log(self, job_id: str, line: LogLine) -> None: ...

    def logs(self, job_id: str) -> list[LogLine]: ...

    def close(self) -> None: ...
