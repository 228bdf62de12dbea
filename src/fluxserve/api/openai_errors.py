"""fal's error responses, spoken as OpenAI's on /v1: one translation at the edge of those routes.

Everything below this middleware (input checks, body caps, auth, rate limits, admission, a job's failure)
answers in fal's shape, `{"detail": ...}`; on a /v1 path that answer leaves as
`{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes (a 422 is a 400 there), so the
`openai` SDKs raise their typed errors (BadRequestError, AuthenticationError, RateLimitError, ...) naming the
field. A body already in OpenAI's shape passes unchanged. Only error responses are read, and they are small.
"""

from __future__ import annotations

import json
from typing import Any

from fluxserve.api.body_limits import Message, Receive, Scope, Send

PREFIX = "/v1/"
# fal's error_type -> OpenAI's (status, code), where they differ from "same status, code = error_type".
KIND_STATUS = {"model_not_found": 404}
CODES_BY_STATUS = {
    401: "invalid_api_key",
    404: "not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}
# FastAPI/pydantic error types -> OpenAI's codes.
VALIDATION_CODES = {"extra_forbidden": "unknown_parameter", "missing": "missing_required_parameter"}


def error_body(
    message: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = (
        "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def param_of(loc: list[Any]) -> str | None:
    """["body", "size"] -> "size"; ["body", "image_size", "width"] -> "image_size.width"."""
    parts = (
        [str(part) for part in loc[1:]] if loc and loc[0] in ("body", "query", "header") else map(str, loc)
    )
    return ".".join(parts) or None


def translated(status: int, body: Any) -> tuple[int, dict[str, Any]]:
    """fal's (status, body) -> OpenAI's."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return status, body  # already OpenAI's
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # a 422: the first problem
        first = detail[0]
        loc, msg, kind = first.get("loc", []), str(first.get("msg", "invalid")), str(first.get("type", ""))
        param = param_of(loc)
        code = VALIDATION_CODES.get(kind, kind or "invalid_value")
        status = KIND_STATUS.get(kind, 400 if status == 422 else status)
        message = f"{param}: {msg}" if param and not msg.startswith(param) else msg
        if kind == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        return status, error_body(message, status, param, code)
    message = str(detail) if detail is not None else json.dumps(body)[:300]
    code = (body.get("error_type") if isinstance(body, dict) else None) or CODES_BY_STATUS.get(status)
    return status, error_body(message, status, None, code)


class OpenAIErrors:
    """Pure ASGI: for /v1 paths, error responses are buffered (they are small) and translated."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def translating(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await send_translated(send, start, b"".join(chunks))

        await self.app(scope, receive, translating)


async def send_translated(send: Send, start: Message, raw: bytes) -> None:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"detail": raw.decode("utf-8", "replace")[:300]}
    status, shaped = translated(start["status"], body)
    data = json.dumps(shaped).encode()
    kept = [
        (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
    ]
    headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def install(app: Any) -> None:
    app.add_middleware(OpenAIErrors)
    document(app)


def document(app: Any) -> None:
    """The OpenAPI document says what the middleware does: no /v1 route answers FastAPI's automatic 422 (it
    becomes a 400 with OpenAI's error body, which the routes declare), so a client generated from the
    document expects the 400 it gets."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for path, operations in build()["paths"].items():  # build() fills app.openapi_schema
                if path.startswith(PREFIX):
                    for operation in operations.values():
                        operation.get("responses", {}).pop("422", None)
        return app.openapi_schema

    app.openapi = openapi
