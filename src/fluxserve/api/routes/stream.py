"""Streaming runs (`POST /{app}/stream`, what fal_client.stream and JS fal.stream call).

The sync route's job, followed as server-sent events: one `data:` event per denoising step (read back from
the step log lines the worker writes), `:` keep-alives while the job waits, and last the output exactly as the
sync route answers it. Unlike fal's stream, the job goes through the queue and waits its turn.

A job that fails or is cancelled ends with `event: error` carrying fal's error body (`detail`, `error_type`,
plus `status` and `request_id`) as its last event. Neither client reads an event's name or raises once a 200
stream has begun (fal_client yields every event's JSON; JS resolves done() with the last one), so that body
is what each hands its caller; a refusal before the job is queued is a plain JSON 4xx instead. A client that
hangs up abandons its job, as on the sync route.
"""

# No `from __future__ import annotations`: FastAPI must see the real types in the signature.

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fluxserve.api import fal, job_calls
from fluxserve.api.deps import Services, services
from fluxserve.api.endpoints import ENDPOINTS, Endpoint, operation_id
from fluxserve.api.responses import error
from fluxserve.api.routes.run import hang_up, submitted_job
from fluxserve.core.jobs import PREVIEW_LEVEL, Job, JobStatus, parsed_step, step_message

# Previews are at the latent resolution: FLUX's VAE downsamples by 8 (sizes are multiples of 16, so exact).
PREVIEW_DOWNSCALE = 8


def step_event(job: Job, step: int, total: int, previews: list[str]) -> dict[str, Any]:
    event = {"progress": step / total, "message": step_message(step, total), "step": step, "total": total,
             "request_id": job.id, "status": fal.FAL_STATUS[JobStatus.RUNNING]}  # fmt: skip
    if previews:
        width, height = job.spec.width // PREVIEW_DOWNSCALE, job.spec.height // PREVIEW_DOWNSCALE
        event["images"] = [{"url": uri, "width": width, "height": height, "content_type": "image/jpeg"}
                           for uri in previews]  # fmt: skip
    return event


def sse(data: dict[str, Any], event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


async def job_events(svc: Services, job: Job, gone: asyncio.Event) -> AsyncIterator[str]:
    """Step events as the worker logs them, woken by the change feed when this job changes; the output (or
    error) last."""
    loop = asyncio.get_running_loop()
    seen_logs, quiet_since = 0, loop.time()
    previews: list[str] = []  # the preview lines logged since the last step line: that step's images
    with svc.changes.watch(job.id, logs=True) as changes:
        while not gone.is_set():
            view = await svc.store.status_view_async(job.id, True)  # job and logs in one read
            if view is None:  # removed under us (retention): nothing more will come
                return
            current, logs = view.job, view.logs or []
            for line in logs[seen_logs:]:
                if line.level == PREVIEW_LEVEL:
                    previews.append(line.message)
                elif (step := parsed_step(line.message)) is not None:
                    yield sse(step_event(current, *step, previews))
                    previews, quiet_since = [], loop.time()
            seen_logs = len(logs)
            if current.status.terminal:
                async for tail in final_events(svc, current):
                    yield tail
                return
            if loop.time() - quiet_since >= svc.waiting.keepalive_s:  # undici's 300 s body timeout, proxies
                yield ": keep-alive\n\n"
                quiet_since = loop.time()
            await changes.next(svc.waiting.poll_interval_s)


async def final_events(svc: Services, job: Job) -> AsyncIterator[str]:
    failure = job.error_or_cancel
    if failure is None:
        await job_calls.forget_if_handed_out_once(svc, job)
        yield sse(job.output or {})
        return
    yield sse({**failure.body, "status": failure.status_code, "request_id": job.id}, event="error")


async def followed(svc: Services, job: Job, request: Request) -> AsyncIterator[str]:
    """job_events, abandoning the job when the client goes away (noticed within one poll interval)."""
    ended = False
    try:
        async with hang_up(request) as gone:
            async for chunk in job_events(svc, job, gone):
                yield chunk
        ended = not gone.is_set()
    finally:
        if not ended:  # hung up (or the server dropped the request): nobody will read the job's end
            await job_calls.abandon(svc, job.id)


def add_stream_route(router: APIRouter, endpoint: Endpoint) -> None:
    async def stream(
        request: Request,
        job: Job | JSONResponse = Depends(submitted_job(endpoint, streamed=True)),
        svc: Services = Depends(services),
    ):
        if isinstance(job, JSONResponse):  # refused before any event: a plain JSON error both clients read
            return job
        return StreamingResponse(
            followed(svc, job, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", fal.REQUEST_ID_HEADER: job.id},
        )

    router.add_api_route(
        f"/{endpoint.app_id}/stream",
        stream,
        methods=["POST"],
        summary=f"{endpoint.summary} (server-sent events: one per step, then the output)",
        operation_id=operation_id("stream", endpoint.app_id),
        tags=["run"],
        responses={
            200: {"description": "Step events, then the output", "content": {"text/event-stream": {}}},
            504: error("Not started within X-Fal-Request-Timeout (fal's user timeout)"),
        },
    )


def router() -> APIRouter:
    r = APIRouter()
    for endpoint in ENDPOINTS:
        add_stream_route(r, endpoint)
    return r
