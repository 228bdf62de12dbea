"""Submitting a job and waiting for it: shared by the synchronous route and (later) the queue routes."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services
from fluxserve.jobs import GenerationSpec, Job, JobStatus, new_job_id

REQUEST_ID_HEADER = "x-fal-request-id"


async def submit(svc: Services, app_id: str, spec: GenerationSpec) -> Job:
    job = Job(id=new_job_id(), app=app_id, spec=spec)
    await run_in_threadpool(svc.store.submit, job)
    return job


async def wait_for_terminal(svc: Services, job_id: str) -> Job:
    """Poll the store until the job ends. The store may live in another process, so we read, not listen."""
    while True:
        job = await run_in_threadpool(svc.store.get, job_id)
        if job is not None and job.status.terminal:
            return job
        await asyncio.sleep(svc.queue.poll_interval_s)


def result_response(job: Job) -> JSONResponse:
    """A finished job as fal answers it: the output, or the stored error status and body."""
    headers = {REQUEST_ID_HEADER: job.id}
    if job.status is JobStatus.COMPLETED:
        return JSONResponse(job.output, headers=headers)
    if job.status is JobStatus.CANCELLED:
        body = {"detail": "Request was cancelled", "error_type": "client_cancelled"}
        return JSONResponse(body, status_code=499, headers={**headers, "x-fal-error-type": "client_cancelled"})
    assert job.error is not None, f"job {job.id} is {job.status.value} without an error"
    headers["x-fal-error-type"] = job.error.error_type
    return JSONResponse(job.error.body, status_code=job.error.status_code, headers=headers)
