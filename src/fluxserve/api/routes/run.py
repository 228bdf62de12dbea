"""The synchronous endpoint (`POST /{app}`, what fal_client.run and curl call).

It is the queue path with a wait: submit a job, wait for its terminal state, answer with its result.
"""

# No `from __future__ import annotations`: FastAPI must see the real input model in the signature.

from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from fluxserve.api import jobs
from fluxserve.api.auth import Caller, caller
from fluxserve.api.deps import Services, base_url, services
from fluxserve.api.endpoints import ENDPOINTS, Endpoint
from fluxserve.api.requests import start_deadline
from fluxserve.api.schemas import Output


def add_run_route(router: APIRouter, endpoint: Endpoint) -> None:
    input_model = endpoint.input_model

    async def run(
        body: input_model,  # type: ignore[valid-type]
        request: Request,
        deadline: Optional[float] = Depends(start_deadline),
        svc: Services = Depends(services),
        who: Caller = Depends(caller),
    ) -> JSONResponse:
        endpoint.ensure_available(svc.api)
        spec = endpoint.to_spec(body, base_url(request, svc), svc.api.max_pixels)
        job = await jobs.submit(svc, endpoint.app_id, spec, deadline, key_id=who.key_id)
        job = await jobs.wait_for_terminal(svc, job.id)
        await jobs.forget_if_sync_mode(svc, job)
        return jobs.result_response(job)

    router.add_api_route(
        f"/{endpoint.app_id}",
        run,
        methods=["POST"],
        response_model=Output,
        summary=endpoint.summary,
        operation_id=f"run_{endpoint.app_id.replace('/', '_').replace('-', '_')}",
        tags=["run"],
    )


def router() -> APIRouter:
    r = APIRouter()
    for endpoint in ENDPOINTS:
        add_run_route(r, endpoint)
    return r
