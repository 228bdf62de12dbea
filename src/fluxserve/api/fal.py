"""fal's wire protocol in one place: the request id header, status names, the status and result bodies, the
request URLs, and the request options that arrive as headers (checked at the edge). Pure shapes: no store
calls.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse

from fluxserve.api.deps import services_of
from fluxserve.api.responses import CompactJSON
from fluxserve.core.errors import InputError
from fluxserve.core.jobs import PREVIEW_LEVEL, Job, JobStatus, LogLine, Priority, RequestOptions

REQUEST_ID_HEADER = "x-fal-request-id"
PRIORITY_HEADER = "x-fal-queue-priority"
LIFECYCLE_HEADER = "x-fal-object-lifecycle-preference"
# The longest lifetime a request may ask for (100 years): past it a number is a mistake, not a wish.
MAX_LIFETIME_S = 100 * 365 * 24 * 3600

# fal's status names. A failed or cancelled job is COMPLETED with an error: clients crash on anything else.
FAL_STATUS = {
    JobStatus.QUEUED: "IN_QUEUE",
    JobStatus.RUNNING: "IN_PROGRESS",
    JobStatus.COMPLETED: "COMPLETED",
    JobStatus.FAILED: "COMPLETED",
    JobStatus.CANCELLED: "COMPLETED",
}


def result_response(job: Job) -> JSONResponse:
    """A finished job as fal answers it: the output, or the stored error status and body."""
    headers = {REQUEST_ID_HEADER: job.id}
    error = job.error_or_cancel
    if error is None:
        return CompactJSON(job.output, headers=headers)
    headers["x-fal-error-type"] = error.error_type
    if error.timeout_type:
        headers["x-fal-request-timeout-type"] = error.timeout_type
    return JSONResponse(error.body, status_code=error.status_code, headers=headers)


def owner_alias(app_id: str) -> str:
    """fal addresses requests by owner and app only: fal-ai/flux/schnell/redux -> fal-ai/flux."""
    return "/".join(app_id.split("/")[:2])


def request_urls(base_url: str, job: Job) -> dict[str, str]:
    response_url = f"{base_url}/queue/{owner_alias(job.app)}/requests/{job.id}"
    return {
        "request_id": job.id,
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def log_entry(line: LogLine) -> dict[str, Any]:
    stamp = datetime.datetime.fromtimestamp(line.timestamp, datetime.timezone.utc).replace(tzinfo=None)
    return {"message": line.message, "level": line.level, "source": "USER", "timestamp": stamp.isoformat()}


def status_body(
    job: Job, base_url: str, position: int | None, logs: list[LogLine] | None
) -> dict[str, Any]:
    """fal's status object. `logs` is always present (null when not asked for): the Python client needs it."""
    body: dict[str, Any] = {
        "status": FAL_STATUS[job.status],
        **request_urls(base_url, job),
        "logs": None if logs is None else [log_entry(line) for line in logs if line.level != PREVIEW_LEVEL],
    }
    if job.status is JobStatus.QUEUED:
        body["queue_position"] = position if position is not None else 0
    if job.status.terminal:
        inference = (job.output or {}).get("timings", {}).get("inference")
        body["metrics"] = {"inference_time": inference}
        error = job.error_or_cancel
        if error is not None:
            body["error"] = error.detail if isinstance(error.detail, str) else str(error.detail)
            body["error_type"] = error.error_type
    return body


# What fal_webhook must look like at the edge (an http(s) URL with a host); net/webhooks.py checks the rest.
WEBHOOK_URL = r"^[hH][tT][tT][pP][sS]?://[^\s/?#]+"
# A positive decimal number of seconds (what start_timeout accepts), so the schema says what is refused.
SECONDS = r"^\s*(0*[1-9][0-9]*(\.[0-9]*)?|0*\.0*[1-9][0-9]*)\s*$"


# The request dependencies below are `async def` though they await nothing: FastAPI runs a plain `def`
# dependency on the thread pool, one hop per dependency per request.
async def start_deadline(
    # Typed str, default None: the schema says "a string, optional", not "a string or null" (a header has no null).
    x_fal_request_timeout: str = Header(default=None, pattern=SECONDS),
    x_fal_request_start_timeout: str = Header(default=None, pattern=SECONDS),
) -> float | None:
    """A dependency for every route that creates a job: the newer header wins when both are sent."""
    return start_timeout(x_fal_request_start_timeout or x_fal_request_timeout)


def start_timeout(header: str | None) -> float | None:
    """X-Fal-Request-Start-Timeout / X-Fal-Request-Timeout: seconds a request may wait before it starts."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:  # also refuses "nan" and "inf"; the value is not echoed back
        raise InputError("x-fal-request-timeout", "must be a positive number of seconds", location="header")
    return seconds


async def queue_priority(
    x_fal_queue_priority: str = Header(
        default=None,
        description="normal (the default) or low: a low request runs once no normal one waits; "
        "fal ignores other values",
    ),
) -> Priority:
    """A dependency for the queue submit (fal's clients send it there only; JS on every submit)."""
    if x_fal_queue_priority is None:
        return Priority.NORMAL
    try:
        return Priority(x_fal_queue_priority.strip().lower())
    except ValueError:
        return Priority.NORMAL  # fal ignores a value it does not know (and JS passes any string through)


# fal's documented values for X-Fal-No-Retry; any other value leaves retries on.
TRUE_VALUES = {"1", "true", "yes"}


async def request_options(
    x_fal_no_retry: str = Header(
        default=None,
        description="1, true or yes: a request whose worker dies fails (503 runner_disconnected) instead of "
        "being queued again",
    ),
    x_fal_store_io: str = Header(
        default=None,
        description="0: the request's payloads (prompt, result JSON) are not kept once its result is handed "
        "out (images stay at their URLs)",
    ),
) -> RequestOptions:
    """A dependency for every route that creates a job: fal's platform headers that change how it is handled.
    Values fal does not document leave the default (fal ignores them too)."""
    no_retry = x_fal_no_retry is not None and x_fal_no_retry.strip().lower() in TRUE_VALUES
    store_io = x_fal_store_io is None or x_fal_store_io.strip() != "0"
    return RequestOptions(no_retry=no_retry, store_io=store_io)


def requested_lifetime(header: str | None, name: str = LIFECYCLE_HEADER) -> float | None:
    """fal's object lifecycle JSON -> seconds its objects live: None when it sets none (absent header or key),
    math.inf for `"expiration_duration_seconds": null` (fal: no expiration). Other keys (initial_acl) are
    ignored: every fluxserve file is public to whoever holds its URL, like fal's default ACL."""
    if header is None:
        return None
    try:
        preference = json.loads(header)
    except ValueError:
        preference = None
    if not isinstance(preference, dict):
        raise InputError(name, 'must be a JSON object such as {"expiration_duration_seconds": 3600}',
                         location="header")  # fmt: skip
    if "expiration_duration_seconds" not in preference:
        return None
    seconds = preference["expiration_duration_seconds"]
    if seconds is None:
        return math.inf
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not 0 < seconds <= MAX_LIFETIME_S:
        limit = f"up to {MAX_LIFETIME_S}"
        message = f"expiration_duration_seconds must be a positive number of seconds {limit}, or null"
        raise InputError(name, message, location="header")
    return float(seconds)


async def output_lifetime(
    request: Request,
    x_fal_object_lifecycle_preference: str = Header(
        default=None,
        description='JSON {"expiration_duration_seconds": N}: the output images are deleted N seconds after '
        "they are stored (null: never); without it the server's --output-retention-hours applies",
    ),
) -> float | None:
    """A dependency for every route that creates a job: seconds its images live, None for as long as they are
    not deleted."""
    seconds = requested_lifetime(x_fal_object_lifecycle_preference)
    if seconds is None:
        seconds = services_of(request).api.output_retention_s or math.inf  # 0: the operator keeps them
    return None if seconds == math.inf else seconds
