"""The synchronous endpoint (`POST /{app}`, what fal_client.run and curl call).

It is the queue path with a wait: submit a job (under the same admission caps as the queue), wait for its
terminal state, answer with its result. A client that hangs up abandons its job: it is cancelled, so the
worker never renders it (or stops it between steps), and fal's clients, which re-send on timeouts, are not
billed twice.
"""

# No `from __future__ import annotations`: FastAPI must see the real input model in the signature.

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Optional

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from fluxserve.api import admission, fal, job_calls, lean_submit, waiting
from fluxserve.api.auth import Caller, submitter
from fluxserve.api.deps import Services, base_url, services
from fluxserve.api.endpoints import ENDPOINTS, Endpoint, operation_id
from fluxserve.api.fal import output_lifetime, request_options, start_deadline
from fluxserve.api.lean_route import Handler, lean_route
from fluxserve.api.responses import error
from fluxserve.api.schemas import Output
from fluxserve.core.jobs import Job, RequestOptions
from fluxserve.store.protocols import Admission, QueueFull

# Nobody reads it: the client is gone. nginx's code for "client closed request", in fal's error shape.
ABANDONED = {"detail": "The client disconnected; the request was cancelled", "error_type": "client_cancelled"}


def submitted_job(endpoint: Endpoint, streamed: bool = False) -> Callable[..., Awaitable[Job | JSONResponse]]:
    """A dependency that validates the body, admits and submits its job: the job, or the refusal to answer.
    Shared with /stream (api/routes/stream.py), so both take the same input, auth, rate limit, caps and
    X-Fal-Request-Timeout as the queue. A streamed job asks for step previews where the server shows them."""
    input_model = endpoint.input_model

    async def submit(
        body: input_model,  # type: ignore[valid-type]
        request: Request,
        deadline: Optional[float] = Depends(start_deadline),
        options: RequestOptions = Depends(request_options),
        lifetime: Optional[float] = Depends(output_lifetime),
        admit: Admission = Depends(admission.admission),
        svc: Services = Depends(services),
        who: Caller = Depends(submitter),  # a submit: spends one of the key's rate-limit tokens
    ) -> Job | JSONResponse:
        endpoint.ensure_available(svc.api)
        spec = endpoint.to_spec(body, base_url(request, svc), svc.api.max_pixels)
        spec = dataclasses.replace(spec, output_ttl_s=lifetime)
        if streamed and svc.api.stream_previews:
            spec = dataclasses.replace(spec, previews=True)
        try:
            job = job_calls.new_job(endpoint.app_id, spec, deadline, key_id=who.key_id, options=options)
            return await job_calls.submit(svc, job, admit)
        except QueueFull as exc:
            return admission.refusal(exc, svc)

    return submit


def add_run_route(router: APIRouter, endpoint: Endpoint) -> None:
    submit_job = submitted_job(endpoint)

    async def run(
        request: Request,
        job: Job | JSONResponse = Depends(submit_job),
        svc: Services = Depends(services),
    ) -> JSONResponse:
        if isinstance(job, JSONResponse):
            return job
        done = await wait_for_end(request, svc, job)
        if isinstance(done, JSONResponse):
            return done
        await job_calls.forget_if_handed_out_once(svc, done)
        return fal.result_response(done)

    async def served_run(request: Request, fastapi_handler: Handler) -> Response:
        """`run` as its lean route serves it: a plain request read by hand, anything else by FastAPI."""
        got = await lean_submit.plain_submission(request, endpoint.input_model, with_webhook=False)
        if got is None:
            return await fastapi_handler(request)
        job = await submit_job(got.body, request, got.deadline, got.options, got.lifetime, got.admit, got.svc,
                               got.who)  # fmt: skip
        return await run(request, job, got.svc)

    router.add_api_route(
        f"/{endpoint.app_id}",
        run,
        methods=["POST"],
        response_model=Output,
        summary=endpoint.summary,
        operation_id=operation_id("run", endpoint.app_id),
        tags=["run"],
        responses={504: error("Not started within X-Fal-Request-Timeout (fal's user timeout)")},
        route_class_override=lean_route(served_run),
    )


async def wait_for_end(request: Request, svc: Services, job: Job) -> Job | JSONResponse:
    """The job once it ended; cancelled, and a 499, if the client hangs up first (also the OpenAI routes')."""
    try:
        async with hang_up(request) as gone:
            done = await waiting.wait_for_terminal(svc, job.id, gone)
    except asyncio.CancelledError:  # the server dropped this request (its client went away, or shutdown)
        await job_calls.abandon(svc, job.id)
        raise
    if done is None:
        await job_calls.abandon(svc, job.id)
        return JSONResponse(ABANDONED, status_code=499)
    return done


@contextlib.asynccontextmanager
async def hang_up(request: Request) -> AsyncIterator[asyncio.Event]:
    """An event set when the client closes the connection: one receive() waits for http.disconnect for as long
    as the job runs. (request.is_disconnected() polls with an already-cancelled receive; behind the metrics
    middleware's receive wrapper it never reported a hang-up.)"""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        watcher.cancel()


def router() -> APIRouter:
    r = APIRouter()
    for endpoint in ENDPOINTS:
        add_run_route(r, endpoint)
    return r
