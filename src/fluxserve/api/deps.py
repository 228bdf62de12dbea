"""What the routes need, handed in by create_app (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from fluxserve.config import ApiSettings, QueueSettings
from fluxserve.queue.base import JobStore
from fluxserve.storage.base import BlobStore


@dataclass(frozen=True)
class Services:
    api: ApiSettings
    queue: QueueSettings
    store: JobStore
    blobs: BlobStore
    # Signs webhooks; its public keys are published at /.well-known/jwks.json.
    signer: Any = None
    # Wakes waiting requests when the store changes (api.changes.ChangeFeed).
    changes: Any = None


def services(request: Request) -> Services:
    return request.app.state.services


def base_url(request: Request, svc: Services) -> str:
    """The absolute base for URLs handed to the client: the operator's public URL, else this request's."""
    return (svc.api.public_url or str(request.base_url)).rstrip("/")
