"""Operational endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from fluxserve.api.deps import Services, services

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/.well-known/jwks.json")
async def jwks(svc: Services = Depends(services)) -> dict[str, Any]:
    """The public keys webhook receivers verify fluxserve's signatures with, as they do fal's."""
    return svc.signer.jwks() if svc.signer else {"keys": []}
