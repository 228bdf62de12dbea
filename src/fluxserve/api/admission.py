"""Who may join the queue: the operator's caps and fal's `fal_max_queue_length`, as one store Admission.

The store checks the Admission in the same transaction as the insert (store/protocols.py), so the caps hold exactly
under racing submits; this module only builds it from the request and turns a refusal into fal's 429.
"""

from __future__ import annotations

from typing import Optional

from fastapi import Depends, Query
from fastapi.responses import JSONResponse

from fluxserve.api.deps import Services, services
from fluxserve.store.protocols import Admission, QueueFull

MAX_QUEUE_LENGTH_HELP = (
    "Reject the request with 429 if more than this many requests are already waiting (0: unless none is)"
)


# `async def` though it awaits nothing: FastAPI runs a plain `def` dependency on the thread pool, one hop
# per dependency per request.
async def admission(
    fal_max_queue_length: Optional[int] = Query(default=None, ge=0, description=MAX_QUEUE_LENGTH_HELP),
    svc: Services = Depends(services),
) -> Admission:
    """A dependency for every route that creates a job (queue submit and the sync endpoint alike)."""
    cap = svc.admission.max_queue_length
    if fal_max_queue_length is not None:
        # fal: "reject with 429 if the queue already has more than this many requests waiting", so the job is
        # admitted while at most N wait: fewer than N + 1. N = 0 admits only into an empty queue.
        cap = min(cap, fal_max_queue_length + 1)
    return Admission(max_queued=cap, max_queued_per_key=svc.admission.max_queued_per_key)


def refusal(exc: QueueFull, svc: Services) -> JSONResponse:
    """fal's 429 (its clients retry it with backoff), saying which cap was reached and who set it."""
    if exc.scope == "key":
        detail = (f"This API key already has {exc.limit} requests waiting (the server's per-key share of the "
                  "queue); try again when some have started")  # fmt: skip
    elif exc.limit < svc.admission.max_queue_length:
        detail = f"More than {exc.limit - 1} requests are waiting (fal_max_queue_length={exc.limit - 1})"
    else:
        detail = f"Queue is full ({exc.limit} requests waiting); try again later"
    return JSONResponse({"detail": detail, "error_type": "queue_full"}, status_code=429)
