"""fal's request options that arrive as headers and query parameters, checked at the edge."""

from __future__ import annotations

import math

from fastapi import Header

from fluxserve.core.errors import InputError


# A positive decimal number of seconds (what start_timeout accepts), so the schema says what is refused.
SECONDS = r"^\s*(0*[1-9][0-9]*(\.[0-9]*)?|0*\.0*[1-9][0-9]*)\s*$"


def start_deadline(
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
