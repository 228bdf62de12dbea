"""Host-based routing, as fal splits its API over hosts: a request to `queue.<host>` is served by the queue
routes and one to `rest.<host>` by the storage routes, so a client pointed at fluxserve by host alone
(fal_client with only FAL_RUN_HOST, which derives `queue.<host>`) reaches the right route. Any other host is
served as it is.

A scope rewrite before routing, nothing more: fal's queue paths gain fluxserve's `/queue` prefix; fal's REST
paths (`/storage/...`) already are fluxserve's. A path that already carries the prefix is left alone, so the
status and result URLs fluxserve hands back (`<base>/queue/...`, base being the host the client used) work
from that host too. /proxy names its own target, so it is never rewritten.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]

QUEUE_PREFIX = "/queue"
PROXY_PATH = "/proxy"


def host_name(scope: Scope) -> str:
    """The Host header without its port, lower case ('' when absent)."""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"host":
            host = value.decode("latin-1").strip().lower()
            return host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
    return ""


def routed_path(host: str, path: str) -> str:
    """The fluxserve path that serves `path` as asked of `host`."""
    if not host.startswith("queue.") or path == PROXY_PATH:
        return path
    if path == QUEUE_PREFIX or path.startswith(QUEUE_PREFIX + "/"):
        return path
    return QUEUE_PREFIX + path


class HostRouting:
    """Pure ASGI, so streamed responses pass through unbuffered."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = routed_path(host_name(scope), scope["path"])
            if path != scope["path"]:
                raw = scope.get("raw_path") or scope["path"].encode()  # percent-encoded as it came
                scope = {**scope, "path": path, "raw_path": QUEUE_PREFIX.encode() + raw}
        await self.app(scope, receive, send)


def install(app: Any) -> None:
    app.add_middleware(HostRouting)
