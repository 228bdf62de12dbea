"""Operational endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services, services

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(svc: Services = Depends(services)) -> JSONResponse:
    """200 once at least one worker is ready; 503 while workers warm up, or when none reports."""
    states = await run_in_threadpool(svc.store.worker_states)
    if "ready" in states.values():
        status, code = "ready", 200
    else:
        status, code = ("warming" if "warming" in states.values() else "no workers"), 503
    return JSONResponse({"status": status, "workers": states}, status_code=code)


@router.get("/.well-known/jwks.json")
async def jwks(svc: Services = Depends(services)) -> dict[str, Any]:
    """The public keys webhook receivers verify fluxserve's signatures with, as they do fal's."""
    return svc.signer.jwks() if svc.signer else {"keys": []}
