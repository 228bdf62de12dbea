"""fal's proxy protocol: `POST|GET|PUT /proxy` with `x-fal-target-url: <a fal URL>`, what @fal-ai/client sends
with `fal.config({proxyUrl})` (and what tools that offer only a proxy URL send). The target is mapped to the
fluxserve route that serves it and the request is served right here, in process, as if it had been sent
there: same method, headers and body; the response (status, headers, streamed SSE) passes back unchanged.

Never an open proxy: fluxserve makes no outbound request. The target must be one of fal's own hosts or this
server's; anything else is a 400 naming x-fal-target-url.

A scope rewrite before routing, installed outside the body limits, rate limits and metrics, so the mapped
route gets its own body cap and is counted under its own path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi.responses import JSONResponse

from fluxserve.api.body_limits import header
from fluxserve.api.errors import error_item
from fluxserve.api.hosts import PROXY_PATH, QUEUE_PREFIX, host_name

Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]

TARGET_HEADER = "x-fal-target-url"
# What fal's clients build (js: request.js buildUrl, config.js getRestApiUrl) and fal's other spellings, by
# the fluxserve prefix that serves them: the queue gains /queue; run and REST paths are fluxserve's own.
FAL_HOSTS = {
    "fal.run": "", "fal.ai": "",
    "queue.fal.run": QUEUE_PREFIX, "queue.fal.ai": QUEUE_PREFIX,
    "rest.fal.ai": "", "rest.alpha.fal.ai": "", "rest.fal.run": "", "rest.alpha.fal.run": "",
}  # fmt: skip


class TargetRefused(Exception):
    """The target is missing, not a URL, or not fal's nor this server's."""


def local_target(target: str | None, own_host: str) -> tuple[str, str]:
    """(path, query) of the fluxserve route that serves `target`, asked of this server as `own_host`."""
    if not target:
        raise TargetRefused("is required: the fal URL this request is for")
    try:
        url = urlsplit(target.strip())
        host = (url.hostname or "").lower()
    except ValueError:
        raise TargetRefused("is not a URL") from None
    if url.scheme not in ("http", "https") or not host:
        raise TargetRefused("must be an http(s) URL")
    if host in FAL_HOSTS:
        prefix = FAL_HOSTS[host]
    elif host == own_host:
        prefix = ""
    elif host == f"queue.{own_host}":
        prefix = QUEUE_PREFIX
    else:
        raise TargetRefused("must point at fal's hosts or at this server; this is not an open proxy")
    path = url.path or "/"
    if path == PROXY_PATH:
        raise TargetRefused("must not be the proxy itself")
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        prefix = ""  # already fluxserve's path (a URL fluxserve handed out)
    return prefix + path, url.query


def refusal(message: str) -> JSONResponse:
    item = error_item(["header", TARGET_HEADER], f"{TARGET_HEADER} {message}", "value_error")
    return JSONResponse({"detail": [item], "error_type": "invalid_proxy_target"}, status_code=400)


def target_of(scope: Scope) -> str | None:
    value = header(scope, TARGET_HEADER.encode())
    return None if value is None else value.decode("latin-1")


class FalProxy:
    """Pure ASGI: the mapped route streams its response straight back."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PROXY_PATH or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # a preflight is CORS's to answer
            return
        try:
            path, query = local_target(target_of(scope), host_name(scope))
        except TargetRefused as exc:
            await refusal(str(exc))(scope, receive, send)
            return
        # Routing reads the decoded path; raw_path keeps the client's percent-encoding.
        mapped = {**scope, "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode()}
        await self.app(mapped, receive, send)


def install(app: Any) -> None:
    app.add_middleware(FalProxy)
