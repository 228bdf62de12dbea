"""The error responses every route can give, for the OpenAPI schema: a client generated from /openapi.json (or a
fuzzer reading it) learns every status fluxserve answers with, not only 200 and 422."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class CompactJSON(JSONResponse):
    """A JSONResponse encoded by orjson, for the bodies of the hottest routes (status, submit, result): the
    standard library's json was a sixth of a status read. The same compact UTF-8 JSON for everything these
    bodies hold: the edge refuses NaN and lone surrogates (api/json_limits.py), and seeds fit in 64 bits."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ErrorBody(BaseModel):
    """fal's error shape."""

    detail: Any
    error_type: str | None = None


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Statuses any route may answer with, whatever it does: keys (with auth on), limits, admission.
COMMON: dict[int | str, dict[str, Any]] = {
    401: error("No API key, or an unknown or revoked one (auth on)"),
    403: error("The key may not do this (admin only, or not its own data)"),
    408: error("The request's headers did not arrive within --header-timeout"),
    413: error("The body is larger than this route accepts"),
    429: error("The queue, the key's share of it, or the key's submit rate is full"),
    503: error("Too many connections, or a dependency (the store) is busy; retry after Retry-After"),
}
# Routes with an id in their path.
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such request or file"}}
