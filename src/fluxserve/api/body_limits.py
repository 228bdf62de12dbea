"""Request bodies capped per route while they stream in, and JSON bodies checked before any route parses them.

A pure ASGI middleware, so nothing is read past a cap: a Content-Length over it is a 413 before one body byte
is read, and a body that outgrows it (chunked, or lying about its length) is a 413 as soon as it does.
JSON bodies (at most a few MB) are read here, checked by json_limits and handed on unchanged; uploads stream
to their route.

The caps, from ApiSettings:
- the generation endpoints and every other JSON route: max_body_bytes;
- an endpoint that takes image_url: max_body_bytes plus a base64 data: URI of max_upload_bytes;
- the upload routes of routes/storage.py (raw bytes): max_upload_bytes;
- OpenAI's /v1/images/generations: max_body_bytes, its prompt capped like fal's; /v1/images/variations
  (multipart): max_upload_bytes plus max_body_bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from fluxserve.api import errors, json_limits
from fluxserve.api.endpoints import ENDPOINTS
from fluxserve.api.json_limits import JsonLimits
from fluxserve.core.settings import ApiSettings
from fluxserve.net.image_inputs import ImageInputError, check_data_uri_size

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The raw-body routes of routes/uploads.py: POST /files/upload and PUT /storage/upload/{key}.
UPLOAD_PATH = "/files/upload"
UPLOAD_PREFIX = "/storage/upload/"
NOT_AN_UPLOAD = "/storage/upload/initiate"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The OpenAI Images routes (api/routes/openai.py).
OPENAI_GENERATIONS = "/v1/images/generations"
OPENAI_VARIATIONS = "/v1/images/variations"


@dataclass(frozen=True)
class Rule:
    max_bytes: int
    # None: a raw body, streamed to its route under max_bytes.
    json: JsonLimits | None


class RouteLimits:
    """Which rule each path gets. Built once from the settings; one dictionary look-up per request."""

    def __init__(self, routes: dict[str, Rule], uploads: Rule, default: Rule) -> None:
        self.routes, self.uploads, self.default = routes, uploads, default

    def rule_for(self, path: str) -> Rule:
        if path in self.routes:
            return self.routes[path]
        if path == UPLOAD_PATH or (path.startswith(UPLOAD_PREFIX) and path != NOT_AN_UPLOAD):
            return self.uploads
        return self.default

    @classmethod
    def from_settings(cls, api: ApiSettings) -> RouteLimits:
        plain = JsonLimits(max_depth=api.max_json_depth, max_items=api.max_json_items)
        routes = {}
        for endpoint in ENDPOINTS:
            fields = endpoint.input_model.model_fields
            checks: dict[str, Any] = {}
            max_bytes = api.max_body_bytes
            if "prompt" in fields:
                checks["prompt"] = json_limits.max_chars(api.max_prompt_length)
            if "image_url" in fields:
                checks["image_url"] = data_uri_within(api.max_upload_bytes)
                max_bytes += base64_length(api.max_upload_bytes)
            rule = Rule(max_bytes, JsonLimits(api.max_json_depth, api.max_json_items, checks))
            routes[f"/{endpoint.app_id}"] = routes[f"/queue/{endpoint.app_id}"] = rule
        prompt = {"prompt": json_limits.max_chars(api.max_prompt_length)}
        routes[OPENAI_GENERATIONS] = Rule(api.max_body_bytes, JsonLimits(api.max_json_depth, api.max_json_items,
                                                                          prompt))  # fmt: skip
        # multipart: the image and a few small fields, streamed to the route under the cap
        routes[OPENAI_VARIATIONS] = Rule(api.max_upload_bytes + api.max_body_bytes, None)
        return cls(routes, uploads=Rule(api.max_upload_bytes, None), default=Rule(api.max_body_bytes, plain))


def base64_length(size: int) -> int:
    return 4 * -(-size // 3)


def data_uri_within(max_bytes: int) -> Callable[[Any], tuple[str, str] | None]:
    """A field check for image_url: a data: URI no larger than the worker would accept (its length says)."""

    def check(value: Any) -> tuple[str, str] | None:
        if not isinstance(value, str):
            return None
        try:
            check_data_uri_size(value, max_bytes)
        except ImageInputError as exc:
            return f"image_url {exc}", "image_url_invalid"
        return None

    return check


class BodyTooLarge(Exception):
    """Raised from receive() inside a route; caught by the middleware that raised it. Not an HTTPException, so
    no handler inside the app turns it into anything else."""


class BodyLimits:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limits: RouteLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.limits.rule_for(scope["path"])
        declared = declared_length(scope)
        if declared is not None and declared > rule.max_bytes:
            await errors.too_large(rule.max_bytes)(scope, receive, send)
        elif rule.json is not None and scope["method"] in BODY_METHODS and is_json(scope):
            await self.checked_json(scope, receive, send, rule)
        else:
            await self.streamed(scope, receive, send, rule.max_bytes)

    async def checked_json(self, scope: Scope, receive: Receive, send: Send, rule: Rule) -> None:
        assert rule.json is not None
        body, complete = await read_capped(receive, rule.max_bytes)
        if body is None:
            if complete:  # over the cap; else the client went away and nobody is listening
                await errors.too_large(rule.max_bytes)(scope, receive, send)
            return
        problems = json_limits.check(body, rule.json) if body else []
        if problems:
            await errors.validation_response(p.item() for p in problems)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    async def streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await errors.too_large(limit)(scope, receive, send)


async def read_capped(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """(body, True), or (None, True) as soon as it outgrows limit, or (None, False) if the client hung up."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; then the real channel, so the app still hears a disconnect."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def declared_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the HTTP server refuses a malformed length; the count while streaming still holds


def is_json(scope: Scope) -> bool:
    """Whether the limits treat the body as JSON: no content type (checked as if it were), or a JSON one."""
    value = header(scope, b"content-type")
    return value is None or is_json_media(value)


def is_json_media(content_type: bytes) -> bool:
    """A content type FastAPI parses a body as JSON for: application/json or application/*+json."""
    media = content_type.split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def install(app: FastAPI, api: ApiSettings) -> None:
    app.add_middleware(BodyLimits, limits=RouteLimits.from_settings(api))  # type: ignore[arg-type]
