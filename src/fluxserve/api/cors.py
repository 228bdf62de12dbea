"""CORS for the origins the operator lists (--cors-origins), so fal's browser client can call fluxserve.

Starlette's CORSMiddleware answers the preflight and adds the headers. It is installed outermost, so every
response a browser can get carries them, refusals included: a 401, 413 or 429 without
Access-Control-Allow-Origin reaches browser code as an opaque network error instead of fal's error body.
No origins (the default): no middleware and no CORS headers at all.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from fluxserve.api.fal import REQUEST_ID_HEADER

# What @fal-ai/client sends (src/request.js, headers.js, storage.js, middleware.js) and fal_client's uploads.
ALLOWED_HEADERS = [
    "authorization", "content-type", "accept",
    "x-fal-queue-priority", "x-fal-request-timeout", "x-fal-request-start-timeout", "x-fal-runner-hint",
    "x-fal-target-url", "x-fal-object-lifecycle-preference", "x-fal-object-lifecycle", "x-fal-file-name",
    "x-fal-no-retry", "x-fal-store-io",
]  # fmt: skip
# Response headers a page may read: the request id (JS reads it for `requestId`) and fal's error details.
EXPOSED_HEADERS = [REQUEST_ID_HEADER, "x-fal-error-type", "x-fal-request-timeout-type", "retry-after"]
METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
# Browsers may cache a preflight this long (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_S = 600


def install(app: FastAPI, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,  # type: ignore[arg-type]
        allow_origins=list(origins),
        allow_methods=METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_S,
        # No cookies: fal's clients send a key in Authorization, which needs no credentials mode.
        allow_credentials=False,
    )
