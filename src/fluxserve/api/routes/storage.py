"""fal's upload endpoints, so `fal_client.upload_file` and `fal.storage.upload` store into fluxserve's own storage.

Python (fal_v3): POST /storage/auth/token, then POST /files/upload with the bytes -> {access_url}.
JS and the Python fallback: POST /storage/upload/initiate -> {upload_url, file_url}, then PUT upload_url.
The returned URLs are this server's /files/ URLs, which Redux reads from storage without fetching.
"""

from __future__ import annotations

import datetime
import mimetypes
import secrets
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import caller
from fluxserve.api.deps import Services, base_url, services
from fluxserve.storage.local import KEY_PATTERN

# Uploads need a key when auth is on; downloads (GET /files/...) stay open, like fal's CDN URLs.
router = APIRouter(tags=["storage"], dependencies=[Depends(caller)])
TOKEN_LIFETIME = datetime.timedelta(hours=1)


class InitiateUpload(BaseModel):
    content_type: str = "application/octet-stream"
    file_name: str | None = None


def new_key(content_type: str, file_name: str | None) -> str:
    extension = (file_name or "").rsplit(".", 1)[-1].lower() if file_name and "." in file_name else ""
    if not extension.isalnum() or not 1 <= len(extension) <= 8:
        extension = (mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin").lstrip(".")
    return f"{uuid.uuid4().hex}.{extension}"


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds limit (never buffered past it)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def store_body(request: Request, svc: Services, key: str) -> JSONResponse | None:
    data = await read_capped(request, svc.api.max_upload_bytes)
    if data is None:
        limit = svc.api.max_upload_bytes
        return JSONResponse({"detail": f"Upload is larger than the {limit} byte limit"}, status_code=413)
    await run_in_threadpool(svc.blobs.put_at, key, data)
    return None


@router.post("/storage/auth/token")
async def auth_token(request: Request, svc: Services = Depends(services)) -> dict[str, Any]:
    expires = datetime.datetime.now(datetime.timezone.utc) + TOKEN_LIFETIME
    return {"token": secrets.token_urlsafe(24), "token_type": "Bearer", "base_url": base_url(request, svc),
            "expires_at": expires.isoformat()}  # fmt: skip


@router.post("/files/upload")
async def upload_file(request: Request, svc: Services = Depends(services)):
    content_type = request.headers.get("content-type", "application/octet-stream")
    key = new_key(content_type, request.headers.get("x-fal-file-name"))
    refused = await store_body(request, svc, key)
    return refused or {"access_url": svc.blobs.url(key, base_url(request, svc))}


@router.post("/storage/upload/initiate")
async def initiate_upload(body: InitiateUpload, request: Request, svc: Services = Depends(services)):
    key = new_key(body.content_type, body.file_name)
    base = base_url(request, svc)
    return {"upload_url": f"{base}/storage/upload/{key}", "file_url": svc.blobs.url(key, base)}


@router.put("/storage/upload/{key}")
async def put_upload(key: str, request: Request, svc: Services = Depends(services)):
    if not KEY_PATTERN.fullmatch(key):
        return JSONResponse({"detail": "Unknown upload"}, status_code=404)
    refused = await store_body(request, svc, key)
    return refused or JSONResponse({}, status_code=200)
