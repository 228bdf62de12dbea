"""The one place a job store backend is chosen: SQLite in the data dir, or a shared Redis."""

from __future__ import annotations

from fluxserve.core.settings import StoreSettings
from fluxserve.store.protocols import JobStore


def open_store(settings: StoreSettings) -> JobStore:
    url = settings.store_url
    if url is None or url.startswith("sqlite"):
        from fluxserve.store.sqlite import SQLiteJobStore

        return SQLiteJobStore.open(settings.db_path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from fluxserve.store.redis import RedisJobStore  # imports the redis client only when asked for

        return RedisJobStore.open(url)
    raise ValueError(f"--store {url!r}: expected redis://HOST:PORT/DB (or nothing, for SQLite)")
