"""Per-key rate limits on submits: a token bucket for each API key, answered with fal's 429 and a Retry-After.

The buckets live in this API process, not in the job store. With N API nodes behind a load balancer a key
can reach up to N times the configured rate; in exchange a submit costs no extra store round trip (a Redis
call, or a write transaction on SQLite, on the path every submit takes). The global bound on what one key
can hold is the queue's per-key share, which the store enforces across nodes; this limit smooths bursts on
each node.

With auth off every caller is the same anonymous caller, so they share one bucket. Only authenticated keys
get a bucket, so the table grows with the number of keys, not with what clients send.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fluxserve.core.errors import FluxserveError


class RateLimited(FluxserveError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"Too many requests for this key; retry in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


@dataclass
class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; a submit takes one."""

    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class SubmitRateLimiter:
    """One bucket per key id. rate <= 0: no limit. Thread-safe; the clock is injectable for tests."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate > 0 and burst < 1:
            raise ValueError("a submit rate needs a burst of at least 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str | None, TokenBucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key_id: str | None) -> None:
        """Spend one of key_id's tokens, or raise RateLimited saying when to come back."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst, self.burst, now)
            wait = bucket.take(now)
        if wait > 0:
            raise RateLimited(wait)


async def too_many_requests(request: Request, exc: RateLimited) -> JSONResponse:
    # Retry-After is whole seconds (RFC 9110), rounded up so a client that honours it finds a token.
    headers = {"retry-after": str(max(1, math.ceil(exc.retry_after_s))), "x-fal-error-type": "rate_limited"}
    return JSONResponse({"detail": str(exc), "error_type": "rate_limited"}, status_code=429, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RateLimited, too_many_requests)  # type: ignore[arg-type]
