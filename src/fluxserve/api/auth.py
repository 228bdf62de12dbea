"""API keys in fal's form: `Authorization: Key <id>:<secret>`. Only a SHA-256 of the secret is stored.

With auth off (the default on loopback) every caller is an anonymous admin. With it on, a request without a valid
key gets a 401; a key sees only its own requests (another key's request answers 404), and an admin key sees all.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services, services
from fluxserve.core.accounts import hash_secret
from fluxserve.core.errors import FluxserveError
from fluxserve.core.jobs import Job


class Unauthorized(FluxserveError):
    pass


@dataclass(frozen=True)
class Caller:
    key_id: str | None  # None: auth is off
    admin: bool

    def may_see(self, job: Job | None) -> bool:
        return job is not None and (self.admin or job.key_id == self.key_id)


def parse_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("key", "bearer"):
        return None
    key_id, _, secret = value.strip().partition(":")
    return (key_id, secret) if key_id and secret else None


async def caller(request: Request, svc: Services = Depends(services)) -> Caller:
    if not svc.api.auth:
        return Caller(key_id=None, admin=True)
    credentials = parse_credentials(request.headers.get("authorization"))
    if credentials is None:
        raise Unauthorized("Missing credentials: send `Authorization: Key <key id>:<secret>`")
    key = await run_in_threadpool(svc.store.get_key, credentials[0])
    if key is None or key.revoked or not hmac.compare_digest(key.secret_sha256, hash_secret(credentials[1])):
        raise Unauthorized("Invalid or revoked API key")
    return Caller(key_id=key.key_id, admin=key.admin)


async def admin(who: Caller = Depends(caller)) -> Caller:
    """An admin key (any caller with auth off). /metrics needs one: it counts every key's traffic."""
    if not who.admin:
        raise HTTPException(status_code=403, detail="This endpoint needs an admin key")
    return who


async def submitter(who: Caller = Depends(caller), svc: Services = Depends(services)) -> Caller:
    """A caller about to submit a job: spends one of its key's tokens (api.rate_limit) or gets a 429."""
    svc.submit_limits.check(who.key_id)
    return who
