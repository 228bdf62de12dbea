"""create_app: wire settings, store and blobs into the routes. Wiring only."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

import fluxserve
from fluxserve.api import body_limits, cors, errors, hosts, openai_errors, rate_limit, security_headers
from fluxserve.api.deps import Services
from fluxserve.api.responses import COMMON
from fluxserve.api.routes import (
    docs,
    files,
    metrics,
    openai,
    ops,
    playground,
    proxy,
    queue,
    run,
    stream,
    usage,
)
from fluxserve.api.routes import uploads as upload_routes
from fluxserve.api.waiting import ChangeFeed
from fluxserve.blobs.base import BlobStore
from fluxserve.blobs.uploads import Uploads
from fluxserve.core.settings import AdmissionSettings, ApiSettings, WaitingSettings
from fluxserve.store.protocols import JobStore


def create_app(
    api: ApiSettings, store: JobStore, blobs: BlobStore, signer: Any = None, *, admission: AdmissionSettings,
    waiting: WaitingSettings, uploads: Uploads, webhook_targets: Any = None,
) -> FastAPI:
    app = FastAPI(
        title="fluxserve",
        version=fluxserve.__version__,
        description="FLUX.1 [schnell] with fal.ai's API, self-hosted.",
        docs_url=None,  # served by routes/docs.py with local assets
        redoc_url=None,
    )
    changes = ChangeFeed(store)
    app.state.services = Services(
        api=api, admission=admission, waiting=waiting, store=store, blobs=blobs, signer=signer,
        changes=changes, webhook_targets=webhook_targets,
    )
    app.state.uploads = uploads
    errors.install(app)
    body_limits.install(app, api)  # innermost middleware: its 413s and 422s are counted and get headers
    openai_errors.install(app)  # /v1's refusals in OpenAI's shape (body_limits' too), counted as sent
    rate_limit.install(app)
    security_headers.install(app)
    metrics.install(app, store)
    proxy.install(app)  # outside the limits and metrics: the route it maps to is capped and counted as itself
    hosts.install(app)  # queue.<host> and rest.<host> paths, rewritten before /proxy and routing see them
    cors.install(app, api.cors_origins)  # outermost: every refusal above carries the CORS headers too
    # Routes are matched in the order they are added: the queue's (what fal's clients poll) go first.
    queue.install(app)
    docs.install(app)
    playground.install(app)
    app.include_router(ops.router, responses=COMMON)
    app.include_router(usage.router, responses=COMMON)
    app.include_router(upload_routes.router, responses=COMMON)
    app.include_router(files.router, responses=COMMON)
    app.include_router(run.router(), responses=COMMON)
    app.include_router(stream.router(), responses=COMMON)
    app.include_router(openai.router())
    return app
