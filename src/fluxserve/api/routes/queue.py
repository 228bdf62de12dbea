"""fal's queue: submit, status (+ logs), status stream (SSE), result, cancel.

Status, result and cancel are addressed by owner/alias (`/queue/fal-ai/flux/requests/{id}`), as fal's clients
build them; the full app id (`/queue/fal-ai/flux/schnell/requests/{id}`) is accepted too. Request ids are unique
across apps, so either prefix finds any job.
"""

# No `from __future__ import annotations`: FastAPI must see the real input model in the signature.

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api import admission, fal, job_calls, lean_submit
from fluxserve.api.auth import Caller, caller, submitter
from fluxserve.api.deps import Services, base_url, services, services_of
from fluxserve.api.endpoints import ENDPOINTS, Endpoint, operation_id
from fluxserve.api.fal import output_lifetime, queue_priority, request_options, start_deadline
from fluxserve.api.lean_route import Handler, lean_route
from fluxserve.api.responses import COMMON, NOT_FOUND, CompactJSON, error
from fluxserve.core.jobs import Job, JobStatus, Priority, RequestOptions
from fluxserve.net.webhooks import checked_webhook_target
from fluxserve.store.protocols import Admission, QueueFull

TRUTHY = {"1", "true", "True", "yes"}


def add_submit_route(router: APIRouter, endpoint: Endpoint) -> None:
    input_model = endpoint.input_model

    async def submit(
        body: input_model,  # type: ignore[valid-type]
        request: Request,
        fal_webhook: Optional[str] = Query(default=None, pattern=fal.WEBHOOK_URL,
                                           description="http(s) URL to POST the result to when done"),
        deadline: Optional[float] = Depends(start_deadline),
        priority: Priority = Depends(queue_priority),
        options: RequestOptions = Depends(request_options),
        lifetime: Optional[float] = Depends(output_lifetime),
        admit: Admission = Depends(admission.admission),
        svc: Services = Depends(services),
        who: Caller = Depends(submitter),  # a submit: spends one of the key's rate-limit tokens
    ) -> JSONResponse:
        endpoint.ensure_available(svc.api)
        base = base_url(request, svc)
        spec = dataclasses.replace(endpoint.to_spec(body, base, svc.api.max_pixels), output_ttl_s=lifetime)
        try:
            webhook = await checked_webhook_target(svc.webhook_targets, fal_webhook)
            job = job_calls.new_job(endpoint.app_id, spec, deadline, webhook, who.key_id, priority, options)
            position = await job_calls.submit_placed(svc, job, admit)
        except QueueFull as exc:
            return admission.refusal(exc, svc)
        payload = {
            "status": "IN_QUEUE",
            **fal.request_urls(base, job),
            "queue_position": position or 0,
            "gateway_request_id": job.gateway_request_id,
        }
        return CompactJSON(payload, headers={fal.REQUEST_ID_HEADER: job.id})

    async def served_submit(request: Request, fastapi_handler: Handler) -> Response:
        """`submit` as its lean route serves it: a plain request read by hand, anything else by FastAPI."""
        got = await lean_submit.plain_submission(request, input_model, with_webhook=True)
        if got is None:
            return await fastapi_handler(request)
        return await submit(got.body, request, got.webhook, got.deadline, got.priority, got.options,
                            got.lifetime, got.admit, got.svc, got.who)  # fmt: skip

    router.add_api_route(
        f"/queue/{endpoint.app_id}",
        submit,
        methods=["POST"],
        summary=f"Queue: submit to {endpoint.app_id}",
        operation_id=operation_id("submit", endpoint.app_id), responses=COMMON, tags=["queue"],
        route_class_override=lean_route(served_submit),
    )


async def visible(svc: Services, who: Caller, request_id: str) -> Job | None:
    """The job, or None when it does not exist or belongs to another key (both answer 404)."""
    job = await job_calls.read_job(svc, request_id)
    return job if who.may_see(job) else None


async def status(request_id: str, request: Request, logs: str = "0", who: Caller = Depends(caller)):
    # What fal's clients poll, several times a second per request: the fewest dependencies to solve.
    svc = services_of(request)
    body = await job_calls.read_status(svc, who, request_id, base_url(request, svc), logs in TRUTHY)
    if body is None:
        return JSONResponse({"detail": "Request not found"}, status_code=404)
    code = 200 if body["status"] == "COMPLETED" else 202
    return CompactJSON(body, status_code=code, headers={fal.REQUEST_ID_HEADER: request_id})


async def served_status(request: Request, fastapi_handler: Handler) -> Response:
    """`status` as its lean route serves it: the same parameters (plain strings), read from the request."""
    logs = request.query_params.get("logs", "0")
    return await status(request.path_params["request_id"], request, logs, await caller(request))


async def status_events(svc: Services, who: Caller, request_id: str, base: str, with_logs: bool
                        ) -> AsyncIterator[str]:  # fmt: skip
    """One `data:` event per change, a comment as keep-alive, closed after the terminal event.

    Each event carries only the log lines that are new since the previous event: the JS client appends them.
    """
    loop = asyncio.get_running_loop()
    last, sent_logs, quiet_since = None, 0, loop.time()
    while True:
        body = await job_calls.read_status(svc, who, request_id, base, with_logs)
        if body is None:
            return
        logs = body["logs"]
        body["logs"] = logs[sent_logs:] if logs is not None else None
        changed = {**body, "logs": None} != last or bool(body["logs"])
        if changed:
            yield f"data: {json.dumps(body)}\n\n"
            last, quiet_since = {**body, "logs": None}, loop.time()
            sent_logs = len(logs) if logs is not None else 0
        elif loop.time() - quiet_since >= svc.waiting.keepalive_s:
            yield ": keep-alive\n\n"
            quiet_since = loop.time()
        if body["status"] == "COMPLETED":
            return
        await svc.changes.wait(svc.waiting.poll_interval_s, request_id, logs=with_logs)


async def status_stream(request_id: str, request: Request, logs: str = "0", svc: Services = Depends(services),
                        who: Caller = Depends(caller)):  # fmt: skip
    base = base_url(request, svc)
    if await visible(svc, who, request_id) is None:
        return JSONResponse({"detail": "Request not found"}, status_code=404)
    return StreamingResponse(
        status_events(svc, who, request_id, base, logs in TRUTHY),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", fal.REQUEST_ID_HEADER: request_id},
    )


async def result(request_id: str, svc: Services = Depends(services), who: Caller = Depends(caller)):
    job = await visible(svc, who, request_id)
    if job is None:
        return JSONResponse({"detail": "Request not found"}, status_code=404)
    if not job.status.terminal:
        return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
    if job.status is JobStatus.COMPLETED and job.output is None:
        detail = "The result of a sync_mode request is not kept; it was returned once"
        return JSONResponse({"detail": detail}, status_code=410)
    response = fal.result_response(job)
    await job_calls.forget_if_handed_out_once(svc, job)
    return response


async def cancel(request_id: str, svc: Services = Depends(services), who: Caller = Depends(caller)):
    if await visible(svc, who, request_id) is None:  # an unknown id is never echoed (it may not even be ASCII)
        return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
    headers = {fal.REQUEST_ID_HEADER: request_id}
    if await run_in_threadpool(svc.store.cancel, request_id):
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)
    if await job_calls.read_job(svc, request_id) is None:
        return JSONResponse({"status": "NOT_FOUND"}, status_code=404, headers=headers)
    return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400, headers=headers)


# The routes fal's clients poll several times a second per request, served by their lean adapters.
LEAN = {status: lean_route(served_status)}


def add_request_routes(router: APIRouter, prefix: str, documented: bool) -> None:
    base = f"/queue/{prefix}/requests/{{request_id}}"
    for path, handler, method, responses in (
        (f"{base}/status", status, "GET", {202: {"description": "In the queue, or in progress"}}),
        (f"{base}/status/stream", status_stream, "GET",
         {200: {"description": "Server-sent events, one status per change", "content": {"text/event-stream": {}}}}),
        (base, result, "GET", {400: error("Still in progress"), 410: error("A sync_mode result, already returned")}),
        (f"{base}/cancel", cancel, "PUT", {202: {"description": "Cancellation requested"},
                                          400: {"description": "Already completed"}}),
    ):
        name = operation_id(handler.__name__, prefix)
        router.add_api_route(
            path, handler, methods=[method], include_in_schema=documented, operation_id=name, name=name,
            responses={**COMMON, **NOT_FOUND, **responses}, tags=["queue"],
            route_class_override=LEAN.get(handler),
        )


def install(app: FastAPI) -> None:
    """On the app's own router, not an included one: each level of inclusion is one more route match per
    request (FastAPI keeps included routers as routers), and these are the routes polled most."""
    r = app.router
    for endpoint in ENDPOINTS:
        add_submit_route(r, endpoint)
    owner_prefixes = sorted({fal.owner_alias(e.app_id) for e in ENDPOINTS})
    for prefix in owner_prefixes:
        add_request_routes(r, prefix, documented=True)
    for endpoint in ENDPOINTS:
        add_request_routes(r, endpoint.app_id, documented=False)
