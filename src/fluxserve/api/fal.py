"""Jobs as the HTTP layer sees them: submit, wait, and fal's status and result bodies.

Shared by the synchronous route and the queue routes, so both speak exactly the same protocol.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import anyio
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services
from fluxserve.core.jobs import GenerationSpec, Job, JobStatus, LogLine, new_job_id
from fluxserve.store.protocols import Admission

REQUEST_ID_HEADER = "x-fal-request-id"

# fal's status names. A failed or cancelled job is COMPLETED with an error: clients crash on anything else.
FAL_STATUS = {
    JobStatus.QUEUED: "IN_QUEUE",
    JobStatus.RUNNING: "IN_PROGRESS",
    JobStatus.COMPLETED: "COMPLETED",
    JobStatus.FAILED: "COMPLETED",
    JobStatus.CANCELLED: "COMPLETED",
}


async def submit(
    svc: Services,
    app_id: str,
    spec: GenerationSpec,
    start_timeout_s: float | None = None,
    webhook_url: str | None = None,
    key_id: str | None = None,
    admission: Admission | None = None,
) -> Job:
    """Raises queue.base.QueueFull (nothing stored) when the job does not fit under `admission`."""
    job = Job(id=new_job_id(), app=app_id, spec=spec, webhook_url=webhook_url, key_id=key_id)
    if start_timeout_s is not None:
        job.start_deadline = job.created_at + start_timeout_s
    await run_in_threadpool(svc.store.submit, job, admission)
    return job


async def wait_for_terminal(svc: Services, job_id: str, abandoned: asyncio.Event | None = None) -> Job | None:
    """Re-read the job whenever the store changes (or every poll_interval_s at worst) until it ends.
    None once `abandoned` is set: nobody waits for the answer any more (the client hung up)."""
    while True:
        job = await run_in_threadpool(svc.store.get, job_id)
        if job is not None and job.status.terminal:
            return job
        if abandoned is not None and abandoned.is_set():
            return None
        await svc.changes.wait(svc.queue.poll_interval_s)


async def abandon(svc: Services, job_id: str) -> None:
    """Cancel a job nobody will read: queued, it leaves the queue; running, the worker stops it between steps.
    Shielded, so it still happens when the request's task is being cancelled (the reason we are here)."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(svc.store.cancel, job_id)


def result_response(job: Job) -> JSONResponse:
    """A finished job as fal answers it: the output, or the stored error status and body."""
    headers = {REQUEST_ID_HEADER: job.id}
    error = job.error_or_cancel
    if error is None:
        return JSONResponse(job.output, headers=headers)
    headers["x-fal-error-type"] = error.error_type
    if error.timeout_type:
        headers["x-fal-request-timeout-type"] = error.timeout_type
    return JSONResponse(error.body, status_code=error.status_code, headers=headers)


async def forget_if_sync_mode(svc: Services, job: Job) -> None:
    """sync_mode results are handed out once, never kept (a webhook, if any, still gets its copy)."""
    if job.spec.sync_mode and job.status is JobStatus.COMPLETED and job.webhook_url is None:
        await run_in_threadpool(svc.store.drop_output, job.id)


def owner_alias(app_id: str) -> str:
    """fal addresses requests by owner and app only: fal-ai/flux/schnell/redux -> fal-ai/flux."""
    return "/".join(app_id.split("/")[:2])


def request_urls(base_url: str, job: Job) -> dict[str, str]:
    response_url = f"{base_url}/queue/{owner_alias(job.app)}/requests/{job.id}"
    return {
        "request_id": job.id,
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def log_entry(line: LogLine) -> dict[str, Any]:
    stamp = datetime.datetime.fromtimestamp(line.timestamp, datetime.timezone.utc).replace(tzinfo=None)
    return {"message": line.message, "level": line.level, "source": "USER", "timestamp": stamp.isoformat()}


def status_body(
    job: Job, base_url: str, position: int | None, logs: list[LogLine] | None
) -> dict[str, Any]:
    """fal's status object. `logs` is always present (null when not asked for): the Python client needs it."""
    body: dict[str, Any] = {
        "status": FAL_STATUS[job.status],
        **request_urls(base_url, job),
        "logs": None if logs is None else [log_entry(line) for line in logs],
    }
    if job.status is JobStatus.QUEUED:
        body["queue_position"] = position if position is not None else 0
    if job.status.terminal:
        inference = (job.output or {}).get("timings", {}).get("inference")
        body["metrics"] = {"inference_time": inference}
        error = job.error_or_cancel
        if error is not None:
            body["error"] = error.detail if isinstance(error.detail, str) else str(error.detail)
            body["error_type"] = error.error_type
    return body


async def read_status(svc: Services, job_id: str, base_url: str, with_logs: bool) -> dict[str, Any] | None:
    job = await run_in_threadpool(svc.store.get, job_id)
    if job is None:
        return None
    position = await run_in_threadpool(svc.store.queue_position, job_id) if job.status is JobStatus.QUEUED else None
    logs = await run_in_threadpool(svc.store.logs, job_id) if with_logs else None
    return status_body(job, base_url, position, logs)
