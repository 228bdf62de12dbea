"""The store calls the HTTP routes make for a job, off the event loop: submit, read its status, cancel one
nobody waits for, and forget a sync_mode result once handed out. Shared by the sync route and the queue routes,
so both speak exactly the same protocol.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import Caller
from fluxserve.api.deps import Services
from fluxserve.api.fal import status_body
from fluxserve.core.jobs import GenerationSpec, Job, JobStatus, Priority, RequestOptions, new_job_id
from fluxserve.store.protocols import Admission


def new_job(
    app_id: str,
    spec: GenerationSpec,
    start_timeout_s: float | None = None,
    webhook_url: str | None = None,
    key_id: str | None = None,
    priority: Priority = Priority.NORMAL,
    options: RequestOptions = RequestOptions(),
) -> Job:
    job = Job(id=new_job_id(), app=app_id, spec=spec, webhook_url=webhook_url, key_id=key_id,
              priority=priority, options=options)  # fmt: skip
    if start_timeout_s is not None:
        job.start_deadline = job.created_at + start_timeout_s
    return job


async def submit(svc: Services, job: Job, admission: Admission | None = None) -> Job:
    """Store a new_job. Raises store.protocols.QueueFull (nothing stored) when it does not fit under
    `admission`."""
    await run_in_threadpool(svc.store.submit, job, admission)
    return job


async def submit_placed(svc: Services, job: Job, admission: Admission | None = None) -> int | None:
    """submit, and the job's queue position read right after in the same thread-pool hop (fal's submit answer
    carries it; a second hop cost a quarter of the submit's CPU)."""

    def store_it() -> int | None:
        svc.store.submit(job, admission)
        return svc.store.queue_position(job.id)

    return await run_in_threadpool(store_it)


async def abandon(svc: Services, job_id: str) -> None:
    """Cancel a job nobody will read: queued, it leaves the queue; running, the worker stops it between steps.
    Shielded, so it still happens when the request's task is being cancelled (the reason we are here)."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(svc.store.cancel, job_id)


async def forget_if_handed_out_once(svc: Services, job: Job) -> None:
    """sync_mode and X-Fal-Store-IO: 0 results are handed out once, never kept (a webhook, if any, still gets
    its copy)."""
    if job.handed_out_once and job.status is JobStatus.COMPLETED and job.webhook_url is None:
        await run_in_threadpool(svc.store.drop_output, job.id)


async def read_job(svc: Services, job_id: str) -> Job | None:
    """The job, read on the loop (status_view_async without logs: no thread-pool hop)."""
    view = await svc.store.status_view_async(job_id, False)
    return None if view is None else view.job


async def read_status(
    svc: Services, who: Caller, job_id: str, base_url: str, with_logs: bool
) -> dict[str, Any] | None:
    """fal's status body from one store read made on the loop (job, position and logs together:
    store.status_view_async); None when the job does not exist or `who` may not see it (both answer 404)."""
    view = await svc.store.status_view_async(job_id, with_logs)
    if view is None or not who.may_see(view.job):
        return None
    return status_body(view.job, base_url, view.position, view.logs)
