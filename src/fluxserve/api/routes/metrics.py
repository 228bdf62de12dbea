"""GET /metrics: Prometheus exposition of the HTTP layer, the queue, and every live worker's reported stats."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import admin
from fluxserve.api.metrics import StoreCollector, http_metrics


def install(app: FastAPI, store: Any) -> None:
    """A registry per app (no global state), the store collector, and a middleware counting requests."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    requests, latency = http_metrics(registry)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the route template: ids do not explode the label space
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    router = APIRouter(tags=["ops"])

    # An admin key with auth on: the numbers cover every key's requests and the whole queue. Prometheus sends
    # one with `authorization: {type: Key, credentials: "<id>:<secret>"}` in its scrape config.
    @router.get("/metrics", response_class=Response, dependencies=[Depends(admin)])
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
