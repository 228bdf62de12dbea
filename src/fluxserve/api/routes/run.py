"""The synchronous endpoint (`POST /{app}`, what fal_client.run and curl call).

It is the queue path with a wait: submit a job, wait for its terminal state, answer with its result.
"""

# No `from __future__ import annotations`: FastAPI must see the real input model in the signature.

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from fluxserve.api import jobs
from fluxserve.api.deps import Services, base_url, services
from fluxserve.api.endpoints import ENDPOINTS, Endpoint
from fluxserve.api.schemas import Output


def add_run_route(router: APIRouter, endpoint: Endpoint) -> None:
    input_model = endpoint.input_model

    async def run(body: input_model, request: Request, svc: Services = Depends(services)) -> JSONResponse:  # type: ignore[valid-type]
        spec = endpoint.to_spec(body, base_url(request, svc), svc.api.max_pixels)
        job = await jobs.submit(svc, endpoint.app_id, spec)
        return jobs.result_response(await jobs.wait_for_terminal(svc, job.id))

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
