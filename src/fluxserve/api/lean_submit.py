"""A submit's parameters read by hand, for the lean routes (api/lean_route.py) of the queue submit and the sync
run: what FastAPI would solve from the same request, by the same dependency functions, in the same order.

Only a plain request is read here: a JSON body the input model accepts, and header and query values inside the
patterns their declarations give. Anything else (another content type, a body the model refuses, a value
outside its pattern) answers None before any dependency has run, and the route's FastAPI handler then serves
the request from the start, so every refusal is still FastAPI's own, word for word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from fluxserve.api import admission, body_limits, fal
from fluxserve.api.auth import Caller, caller, submitter
from fluxserve.api.deps import Services, services_of
from fluxserve.core.jobs import Priority, RequestOptions
from fluxserve.store.protocols import Admission

# The patterns the routes declare for these values (FastAPI checks them; a value outside one goes to FastAPI).
TIMEOUT_HEADERS = ("x-fal-request-timeout", "x-fal-request-start-timeout")
SECONDS = re.compile(fal.SECONDS)
WEBHOOK = re.compile(fal.WEBHOOK_URL)
# fal_max_queue_length is an int >= 0: plain digits are read here; FastAPI decides any other spelling.
DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Submission:
    """The solved parameters of a route that creates a job (queue submit, sync run)."""

    body: BaseModel
    deadline: float | None
    priority: Priority
    options: RequestOptions
    lifetime: float | None
    admit: Admission
    svc: Services
    who: Caller
    webhook: str | None  # the queue's fal_webhook query (the sync route declares none)


def plain_body(raw: bytes, content_type: bytes | None, model: type[BaseModel]) -> BaseModel | None:
    """The input model from a body FastAPI would parse and validate the same way (json.loads, then the model
    on the Python value), or None. The standard library's json, not orjson, as FastAPI's: they differ at the
    edges (an integer past 64 bits), and a lean route must take exactly what FastAPI takes."""
    if not raw or content_type is None or not body_limits.is_json_media(content_type):
        return None
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
        return None


def plain_query(query: Any, with_webhook: bool) -> tuple[bool, str | None, int | None]:
    """(plain, fal_webhook, fal_max_queue_length) from the query string (the last of repeated values, as
    FastAPI takes a scalar)."""
    webhook = query.get("fal_webhook") if with_webhook else None
    if webhook is not None and not WEBHOOK.search(webhook):
        return False, None, None
    cap = query.get("fal_max_queue_length")
    if cap is not None and not DIGITS.fullmatch(cap):
        return False, None, None
    return True, webhook, None if cap is None else int(cap)


async def plain_submission(request: Request, model: type[BaseModel], with_webhook: bool) -> Submission | None:
    """The Submission FastAPI would solve for this request, or None (nothing run) when it is not plain."""
    headers = request.headers
    timeouts = [headers.get(name) for name in TIMEOUT_HEADERS]
    if any(value is not None and not SECONDS.search(value) for value in timeouts):
        return None
    plain, webhook, cap = plain_query(request.query_params, with_webhook)
    if not plain:
        return None
    body = plain_body(await request.body(), body_limits.header(request.scope, b"content-type"), model)
    if body is None:
        return None
    # The dependencies, in the order the routes declare them (the first to raise answers, as in FastAPI).
    deadline = await fal.start_deadline(*timeouts)
    priority = await fal.queue_priority(x_fal_queue_priority=headers.get(fal.PRIORITY_HEADER))
    options = await fal.request_options(x_fal_no_retry=headers.get("x-fal-no-retry"),
                                        x_fal_store_io=headers.get("x-fal-store-io"))  # fmt: skip
    lifetime = await fal.output_lifetime(request, headers.get(fal.LIFECYCLE_HEADER))
    svc = services_of(request)
    admit = await admission.admission(fal_max_queue_length=cap, svc=svc)
    who = await submitter(await caller(request), svc)
    return Submission(body, deadline, priority, options, lifetime, admit, svc, who, webhook)
