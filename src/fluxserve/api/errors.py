"""Domain errors -> fal-shaped HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fluxserve.errors import InputError, NotFound, Unavailable

log = logging.getLogger(__name__)


async def input_error(request: Request, exc: InputError) -> JSONResponse:
    item = {"loc": [exc.location, exc.field], "msg": exc.message, "type": exc.kind}
    return JSONResponse({"detail": [item]}, status_code=422)


async def unauthorized(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=401, headers={"www-authenticate": "Key"})


async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    # 501, not 503: the server will not grow a model by itself, so clients must not retry.
    return JSONResponse({"detail": str(exc), "error_type": exc.error_type}, status_code=501)


async def not_found(request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": f"Not found: {exc}"}, status_code=404)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error", "error_type": "internal_error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(InputError, input_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Unavailable, unavailable)  # type: ignore[arg-type]
    from fluxserve.api.auth import Unauthorized

    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(Exception, unexpected)
