"""Operational endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import Caller, caller
from fluxserve.api.deps import Services, services
from fluxserve.api.metrics import worker_info
from fluxserve.core.worker_state import WorkerState

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness, open to all (load balancers send no key); it says nothing but that the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(svc: Services = Depends(services), _: Caller = Depends(caller)) -> JSONResponse:
    """200 once at least one worker is ready; 503 while workers warm up, or when none reports. Each live worker
    is listed with its state, and in worker_details with what it runs (GPU, device, switches per level).
    With auth on it needs a key, any key: what the workers run is for the clients, not for the world."""
    reports = await run_in_threadpool(svc.store.worker_reports)
    states = {worker: report["state"] for worker, report in reports.items()}
    if WorkerState.READY.value in states.values():
        status, code = WorkerState.READY.value, 200
    elif WorkerState.WARMING.value in states.values():
        status, code = WorkerState.WARMING.value, 503
    else:
        status, code = "no workers", 503
    details = {worker: {"state": report["state"], **worker_info(report)} for worker, report in reports.items()}
    return JSONResponse({"status": status, "workers": states, "worker_details": details}, status_code=code)


@router.get("/.well-known/jwks.json")
async def jwks(svc: Services = Depends(services)) -> dict[str, Any]:
    """The public keys webhook receivers verify fluxserve's signatures with, as they do fal's."""
    return svc.signer.jwks() if svc.signer else {"keys": []}
