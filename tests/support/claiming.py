"""Claiming one job at a time, as most store tests do: the claim a worker with max_batch=1 makes."""

from __future__ import annotations

from typing import Any

from fluxserve.core.jobs import Job
from fluxserve.store.scheduling import ClaimPolicy


def claim_one(store: Any, worker_id: str, lease_s: float, max_per_key: int = 0) -> Job | None:
    jobs = store.claim(worker_id, lease_s, ClaimPolicy(max_batch=1, max_running_per_key=max_per_key))
    assert len(jobs) <= 1, jobs
    return jobs[0] if jobs else None
