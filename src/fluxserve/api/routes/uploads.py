"""fal's upload endpoints, so `fal_client.upload_file` and `fal.storage.upload` store into fluxserve's own storage.

Python (fal_v3): POST /storage/auth/token, then POST /files/upload with the bytes -> {access_url}.
JS and the Python fallback: POST /storage/upload/initiate -> {upload_url, file_url}, then PUT upload_url.
The returned URLs are this server's /files/ URLs, which Redux reads from storage without fetching.

Writes are owned (uploads.py): the JS client sends its PUT without any Authorization, so the upload URL itself
is the credential: issued to the caller's key for one fresh blob key, good for one PUT, for a limited time.
"""

from __future__ import annotations

import datetime
import math
import secrets
from typing import Any, Optional

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import Caller, caller
from fluxserve.api.deps import Services, base_url, services
from fluxserve.api.fal import requested_lifetime
from fluxserve.blobs.base import new_blob_key
from fluxserve.blobs.uploads import QuotaExceeded, UploadRefused, Uploads

# Issuing URLs and direct uploads need a key when auth is on; the PUT carries its grant in the URL instead,
# and downloads (GET /files/...) stay open, like fal's CDN URLs.
router = APIRouter(tags=["storage"])
TOKEN_LIFETIME = datetime.timedelta(hours=1)
# The stored name never takes the client's file name: only an image extension it declares is kept, a hint for
# people reading URLs. The type a file is served with is read from its bytes (blobs/content_types.py).
IMAGE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/gif": "gif"}


class InitiateUpload(BaseModel):
    content_type: str = "application/octet-stream"
    file_name: str | None = None


# `async def` though it awaits nothing: FastAPI runs a plain `def` dependency on the thread pool, one hop
# per dependency per request.
async def upload_lifetime(
    x_fal_object_lifecycle: str = Header(default=None, description='JSON {"expiration_duration_seconds": N}: '
                                         "the file is deleted N seconds after it is stored, or at "
                                         "--upload-retention-hours if that comes first"),
    x_fal_object_lifecycle_preference: str = Header(default=None, description="the same (fal_client: both)"),
) -> float | None:
    """Seconds the uploaded file lives; None: the operator's upload retention (also for null, "never")."""
    if x_fal_object_lifecycle is not None:
        seconds = requested_lifetime(x_fal_object_lifecycle, "x-fal-object-lifecycle")
    else:
        seconds = requested_lifetime(x_fal_object_lifecycle_preference)
    return None if seconds is None or seconds == math.inf else seconds


def uploads(request: Request) -> Uploads:
    return request.app.state.uploads


def new_key(content_type: str | None) -> str:
    declared = (content_type or "").split(";")[0].strip().lower()
    return new_blob_key(IMAGE_EXTENSIONS.get(declared, "bin"))


def refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds limit (never buffered past it)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def store_body(request: Request, svc: Services, owner: str | None, key: str, granted: bool,
                     lifetime_s: float | None = None):  # fmt: skip
    """None once stored, else the refusal to send."""
    data = await read_capped(request, svc.api.max_upload_bytes)
    if data is None:
        return refusal(413, f"Upload is larger than the {svc.api.max_upload_bytes} byte limit")
    try:
        stored = await run_in_threadpool(uploads(request).store, owner, key, data, granted, lifetime_s)
    except QuotaExceeded as exc:
        return refusal(429, str(exc))
    return None if stored else refusal(409, "This upload URL was already used")


@router.post("/storage/auth/token")
async def auth_token(request: Request, svc: Services = Depends(services), who: Caller = Depends(caller)):
    expires = datetime.datetime.now(datetime.timezone.utc) + TOKEN_LIFETIME
    # fal_client sends `<token_type> <token>` to POST /files/upload. With auth on, that is the caller's own
    # key, handed back to the one client that just presented it: the upload is owned like any other request.
    credential = request.headers.get("authorization", "").partition(" ")[2].strip() if who.key_id else ""
    token, token_type = (credential, "Key") if credential else (secrets.token_urlsafe(24), "Bearer")
    body = {"token": token, "token_type": token_type, "base_url": base_url(request, svc),
            "expires_at": expires.isoformat()}  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/files/upload")
async def upload_file(request: Request, lifetime: Optional[float] = Depends(upload_lifetime),
                      svc: Services = Depends(services), who: Caller = Depends(caller)):  # fmt: skip
    key = new_key(request.headers.get("content-type"))
    refused = await store_body(request, svc, who.key_id, key, granted=False, lifetime_s=lifetime)
    return refused or {"access_url": svc.blobs.url(key, base_url(request, svc))}


@router.post("/storage/upload/initiate")
async def initiate_upload(body: InitiateUpload, request: Request, svc: Services = Depends(services),
                          who: Caller = Depends(caller),
                          lifetime: Optional[float] = Depends(upload_lifetime)) -> Any:  # fmt: skip
    key = new_key(body.content_type)
    try:
        grant = await run_in_threadpool(uploads(request).grant, who.key_id, key, lifetime)
    except QuotaExceeded as exc:
        return refusal(429, str(exc))
    base = base_url(request, svc)
    return {"upload_url": f"{base}/storage/upload/{grant.key}?token={grant.token}",
            "file_url": svc.blobs.url(grant.key, base)}  # fmt: skip


@router.put("/storage/upload/{key}")
async def put_upload(key: str, request: Request, token: str = "", svc: Services = Depends(services)):
    try:
        owner = await run_in_threadpool(uploads(request).redeem, key, token)
    except UploadRefused as exc:
        return refusal(403, str(exc))
    refused = await store_body(request, svc, owner, key, granted=True)
    return refused or JSONResponse({}, status_code=200)
