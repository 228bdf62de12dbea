"""Domain errors -> fal-shaped HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fluxserve.core.errors import InputError, NotFound, StoreBusy, Unavailable

log = logging.getLogger(__name__)

# A 422 names what is wrong and never repeats the input: a reflected 25 MB body (or a NaN, which JSON cannot
# carry) turned bad input into slow responses and 500s. A handful of errors is enough to fix a request.
MAX_REPORTED_ERRORS = 10
MAX_LOC_PART_CHARS = 64
MAX_MSG_CHARS = 300


def error_item(loc: Iterable[Any], msg: str, kind: str) -> dict[str, Any]:
    """One fal/FastAPI error item: loc, msg and type only (no `input`, no `ctx`, which can hold the input)."""
    parts = [part if isinstance(part, int) else str(part)[:MAX_LOC_PART_CHARS] for part in loc]
    return {"loc": parts, "msg": str(msg)[:MAX_MSG_CHARS], "type": str(kind)[:MAX_LOC_PART_CHARS]}


def validation_response(errors: Iterable[Mapping[str, Any]]) -> JSONResponse:
    items = []
    for error in errors:
        if len(items) == MAX_REPORTED_ERRORS:
            break
        loc, msg, kind = error.get("loc", ("body",)), error.get("msg", ""), error.get("type", "value_error")
        items.append(error_item(loc, msg, kind))
    return JSONResponse({"detail": items}, status_code=422)


async def request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_response(exc.errors())


def too_large(limit: int) -> JSONResponse:
    """413 in fal's request-error shape. The body was not read to its end, so the connection is not reused."""
    detail = f"Request body is larger than the {limit} byte limit of this route"
    return JSONResponse(
        {"detail": detail, "error_type": "request_too_large"},
        status_code=413,
        headers={"connection": "close", "x-fal-error-type": "request_too_large"},
    )


async def input_error(request: Request, exc: InputError) -> JSONResponse:
    item = error_item([exc.location, exc.field], exc.message, exc.kind)
    return JSONResponse({"detail": [item]}, status_code=422)


async def unauthorized(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=401, headers={"www-authenticate": "Key"})


async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    # 501, not 503: the server will not grow a model by itself, so clients must not retry.
    return JSONResponse({"detail": str(exc), "error_type": exc.error_type}, status_code=501)


async def store_busy(request: Request, exc: StoreBusy) -> JSONResponse:
    """The store stayed locked past its retry budget: nothing was done, and trying again later will work."""
    return JSONResponse({"detail": "The job store is busy; retry shortly", "error_type": "store_busy"},
                        status_code=503, headers={"retry-after": "1"})  # fmt: skip


async def not_found(request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": f"Not found: {exc}"}, status_code=404)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error", "error_type": "internal_error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, request_validation)  # type: ignore[arg-type]
    app.add_exception_handler(InputError, input_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Unavailable, unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(StoreBusy, store_busy)  # type: ignore[arg-type]
    from fluxserve.api.auth import Unauthorized

    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(Exception, unexpected)
