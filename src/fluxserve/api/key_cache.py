"""Verified API keys kept in this process, so an authenticated request reads one counter instead of a key
record and hops to no thread; a revocation still takes effect on the next request, on every API node.

A key is cached under its id and the SHA-256 of the secret that verified it, so a wrong secret for a cached id
misses and is checked against the store like any other. Only live keys are cached: an unknown or revoked one
is read from the store each time, so nothing a client sends grows the cache past the keys that exist.

Revocation is the only change that can make a cached key wrong (keys are never edited or un-revoked), and the
store counts revocations in `key_generation`, bumped in the revoking write. The cache reads it before it
trusts an entry and empties itself when it moved. It is read before a miss reads the key, so a revocation
landing between the two either shows in the key read or moves the generation past the one the entry was
filed under.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.concurrency import run_in_threadpool

from fluxserve.core.accounts import ApiKey


class KeyCache:
    """Used from the event loop only, so it takes no lock."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._generation: int | None = None
        self._keys: dict[tuple[str, str], ApiKey] = {}

    async def current_generation(self) -> int:
        """The store's generation, emptying the cache if a revocation happened since it was filled. A store
        whose reads stay on this machine (SQLite: one indexed read, and WAL readers never wait for a writer)
        is read on the event loop, cheaper than the thread-pool hop; one across the network (Redis) keeps the
        hop, so a stalled server never stalls every request of this process."""
        if self.store.local_reads:
            generation = self.store.key_generation()
        else:
            generation = await run_in_threadpool(self.store.key_generation)
        if generation != self._generation:
            self._keys.clear()
            self._generation = generation
        return generation

    def cached(self, key_id: str, secret_sha256: str) -> ApiKey | None:
        return self._keys.get((key_id, secret_sha256))

    def remember(self, key: ApiKey, secret_sha256: str, generation: int) -> None:
        """File a key the store just verified, if no revocation happened since `generation` was read."""
        if key.revoked or generation != self._generation:
            return
        if hmac.compare_digest(key.secret_sha256, secret_sha256):
            self._keys[(key.key_id, secret_sha256)] = key
