"""Serve stored images back at the stable URLs the outputs carry (on S3: redirect to the bucket).

These bytes may come from anyone holding an upload URL, and they are served from the API's own origin, where
the playground runs with a key. So a file is never active content here: its type is read from its bytes (an
image allow-list, blobs/content_types.py), anything else is a download, the browser may not sniff another
type, and a sandboxing CSP stops script even where a browser would render the file anyway.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services, services
from fluxserve.api.responses import NOT_FOUND
from fluxserve.blobs.base import FILES_ROUTE
from fluxserve.blobs.content_types import served_type

# Keys are random, never reused, and an upload is written once, so a stored file never changes.
IMMUTABLE = "public, max-age=31536000, immutable"
FILE_CSP = "default-src 'none'; img-src 'self'; sandbox"

router = APIRouter(tags=["files"])


def file_headers(inline: bool) -> dict[str, str]:
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": FILE_CSP}  # fmt: skip
    if not inline:
        headers["Content-Disposition"] = "attachment"
    return headers


REDIRECTED = {307: {"description": "On S3: to a URL presigned for this GET"}}


@router.get(FILES_ROUTE + "{key}", response_class=Response, responses={**NOT_FOUND, **REDIRECTED})
async def get_file(key: str, svc: Services = Depends(services)) -> Response:
    target = await run_in_threadpool(svc.blobs.redirect_url, key)
    if target is not None:
        # Each GET gets a fresh target, and the target itself expires: a cache must never keep the redirect.
        return RedirectResponse(target, status_code=307, headers={"Cache-Control": "no-store"})
    data, _ = await run_in_threadpool(svc.blobs.read, key)
    content_type, inline = served_type(data)
    return Response(data, media_type=content_type, headers=file_headers(inline))
