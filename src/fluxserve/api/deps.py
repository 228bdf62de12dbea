"""What the routes need, handed in by create_app (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from fluxserve.api.key_cache import KeyCache
from fluxserve.api.rate_limit import SubmitRateLimiter
from fluxserve.blobs.base import BlobStore
from fluxserve.core.settings import AdmissionSettings, ApiSettings, WaitingSettings
from fluxserve.store.protocols import JobStore


@dataclass(frozen=True)
class Services:
    api: ApiSettings
    admission: AdmissionSettings
    waiting: WaitingSettings
    store: JobStore
    blobs: BlobStore
    # Signs webhooks; its public keys are published at /.well-known/jwks.json.
    signer: Any = None
    # Wakes waiting requests when the store changes (api.changes.ChangeFeed).
    changes: Any = None
    # Per-key submit rate limits (api.rate_limit); None: built from `api`.
    submit_limits: Any = None
    # Checks fal_webhook at submit under the delivery's URL policy (webhooks.WebhookTargets); None: public only.
    webhook_targets: Any = None
    # Verified API keys of this process (api.key_cache); None: a fresh one over `store`.
    keys: Any = None

    def __post_init__(self) -> None:
        if self.submit_limits is None:
            limits = SubmitRateLimiter(self.api.submit_rate, self.api.submit_burst)
            object.__setattr__(self, "submit_limits", limits)  # frozen: set once, here
        if self.keys is None:
            object.__setattr__(self, "keys", KeyCache(self.store))


def services_of(request: Request) -> Services:
    return request.app.state.services


async def services(request: Request) -> Services:
    """The dependency. Async on purpose: FastAPI runs a plain `def` dependency on the thread pool, a hop that
    cost more than the status read it served."""
    return services_of(request)


def base_url(request: Request, svc: Services) -> str:
    """The absolute base for URLs handed to the client: the operator's public URL, else this request's."""
    return (svc.api.public_url or str(request.base_url)).rstrip("/")
