"""API keys in fal's form: `Authorization: Key <id>:<secret>`. Only a SHA-256 of the secret is stored.

With auth off (the default on loopback) every caller is an anonymous admin. With it on, a request without a
valid key gets a 401; a key sees only its own requests (another key's request answers 404), and an admin key
sees all.

A 401 says which credential it got and what to do, because fal users arrive with fal's credentials: a fal.ai
key (`Key <uuid>:<hex>`) or the bearer token `fal auth login` saved, which fal_client sends when no FAL_KEY is
set. No message repeats any part of the header: it may be a live fal.ai credential.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from fluxserve.api.deps import Services, services, services_of
from fluxserve.core.accounts import KEY_PREFIX, hash_secret
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


SEND_A_KEY = ("create one with `fluxserve keys create --name NAME` (with the server's store flags) and "
              "send it as `Authorization: Key <key id>:<secret>`, which fal's clients do with "
              "FAL_KEY=<key id>:<secret>")
MISSING = f"Missing credentials: this server needs an API key; {SEND_A_KEY}"
FAL_LOGIN_TOKEN = ("This is a bearer token such as `fal auth login` saves, which only fal.ai accepts: "
                   f"fluxserve accepts only its own keys; {SEND_A_KEY} (fal_client sends FAL_KEY ahead of a "
                   "login token)")
NOT_A_KEY = f"Malformed API key: a key is `<key id>:<secret>`, as `fluxserve keys create` shows; {SEND_A_KEY}"
UNKNOWN_SCHEME = f"Unsupported Authorization scheme: {SEND_A_KEY}"
FOREIGN_KEY = (f"This key was not issued by this server (fluxserve key ids start with `{KEY_PREFIX}`; "
               f"a fal.ai key works only on fal.ai): {SEND_A_KEY}")
INVALID_KEY = f"Invalid API key: no key on this server has this id and secret; check FAL_KEY, or {SEND_A_KEY}"
REVOKED_KEY = f"This API key was revoked: {SEND_A_KEY}"


def why_no_credentials(header: str | None) -> str:
    """The 401 message for an Authorization header that parse_credentials found no `<id>:<secret>` in."""
    scheme, _, value = (header or "").strip().partition(" ")
    if not scheme:
        return MISSING
    if scheme.lower() == "bearer":
        # fal's login token is a JWT (dots, never a colon); an id:secret after Bearer was parsed as a key.
        return FAL_LOGIN_TOKEN if value.strip() else MISSING
    return NOT_A_KEY if scheme.lower() == "key" else UNKNOWN_SCHEME


def why_refused(key_id: str) -> str:
    """The 401 message for a key id:secret that matches no key here: fal.ai's ids are UUIDs, never ours."""
    return INVALID_KEY if key_id.startswith(KEY_PREFIX) else FOREIGN_KEY


async def caller(request: Request) -> Caller:
    # The services are taken from the request, not a sub-dependency: every route depends on this one, and
    # each dependency FastAPI solves costs more CPU than a cached status read.
    svc = services_of(request)
    if not svc.api.auth:
        return Caller(key_id=None, admin=True)
    header = request.headers.get("authorization")
    credentials = parse_credentials(header)
    if credentials is None:
        raise Unauthorized(why_no_credentials(header))
    key_id, digest = credentials[0], hash_secret(credentials[1])
    generation = await svc.keys.current_generation()
    key = svc.keys.cached(key_id, digest)
    if key is None:
        key = await run_in_threadpool(svc.store.get_key, key_id)
        if key is not None:
            svc.keys.remember(key, digest, generation)
    if key is None or not hmac.compare_digest(key.secret_sha256, digest):
        raise Unauthorized(why_refused(key_id))
    if key.revoked:
        # Said only to a caller that holds the secret: anyone else learns nothing about the key id.
        raise Unauthorized(REVOKED_KEY)
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
