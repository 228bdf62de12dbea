"""GET /metrics: Prometheus exposition of the HTTP layer, the queue, and every live worker's reported stats."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fluxserve.api.auth import admin
from fluxserve.api.metrics import HttpMetrics, StoreCollector, http_metrics


def install(app: FastAPI, store: Any) -> None:
    """A registry per app (no global state), the store collector, and a middleware counting requests."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    requests, latency = http_metrics(registry)

    app.add_middleware(HttpMetrics, requests=requests, latency=latency)  # type: ignore[arg-type]

    router = APIRouter(tags=["ops"])

    # An admin key with auth on: the numbers cover every key's requests and the whole queue. Prometheus sends
    # one with `authorization: {type: Key, credentials: "<id>:<secret>"}` in its scrape config.
    @router.get("/metrics", response_class=Response, dependencies=[Depends(admin)])
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
