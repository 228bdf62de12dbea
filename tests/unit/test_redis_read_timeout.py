"""A status read on Redis that gets no answer (a stalled server) is a StoreBusy after its time limit (the API
answers 503 with Retry-After), not a request that hangs: the asyncio client keeps no socket timeout of its own
(redis-py would wrap every send in a task), so status_view_async keeps the limit."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fluxserve.core.errors import StoreBusy
from fluxserve.store import redis as redis_store


def test_a_status_read_from_a_silent_server_is_store_busy_after_its_limit(monkeypatch):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into its backlog, never answers
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        store = redis_store.RedisJobStore.open(url)
        monkeypatch.setattr(redis_store, "ASYNC_READ_TIMEOUT_S", 0.3)

        async def read() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(StoreBusy, match="did not answer"):
                await store.status_view_async("any", True)
            took = loop.time() - started
            await store.aclose()
            return took

        assert 0.3 <= asyncio.run(asyncio.wait_for(read(), 8)) < 5
    finally:
        silent.close()
