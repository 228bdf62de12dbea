"""The real fal_client pointed at a fluxserve over plain HTTP, by the switches fal-protocol.md §1.3 documents:
the URL formats are read at call time, the storage hosts before the first upload."""

from __future__ import annotations

import fal_client


def point_fal_client(monkeypatch, url: str, key: str = "anything", storage: bool = False):
    """fal_client (the module) sending run, queue and, with storage, upload calls to url, with FAL_KEY=key."""
    monkeypatch.setenv("FAL_KEY", key)
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", f"{url}/")
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{url}/queue/")
    if storage:
        monkeypatch.setattr(fal_client.client, "REST_URL", url)
        monkeypatch.setattr(fal_client.client, "CDN_URL", url)
    return fal_client
