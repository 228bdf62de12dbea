"""Serve stored images back at the stable URLs the outputs carry."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services, services

# Keys are random and never reused, so a stored file never changes.
IMMUTABLE = "public, max-age=31536000, immutable"

router = APIRouter(tags=["files"])


@router.get("/files/{key}", response_class=Response)
async def get_file(key: str, svc: Services = Depends(services)) -> Response:
    data, content_type = await run_in_threadpool(svc.blobs.read, key)
    return Response(data, media_type=content_type, headers={"Cache-Control": IMMUTABLE})
