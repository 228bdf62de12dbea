"""Abuse cases found by fuzzing that belong to no one feature: each was a server error before."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.abuse


def test_a_non_ascii_request_id_is_a_404_not_a_server_error(fake_server):
    with fake_server.client() as http:
        for path in ("/queue/fal-ai/flux/requests/%F0%9F%8F%BB/cancel", "/queue/fal-ai/flux/requests/%0D/cancel"):
            response = http.put(path)
            assert response.status_code == 404 and response.json() == {"status": "NOT_FOUND"}, path
        assert http.get("/queue/fal-ai/flux/requests/%F0%9F%8F%BB/status").status_code == 404


def test_a_store_locked_past_its_retry_budget_is_a_503_to_retry(fake_server, monkeypatch):
    from fluxserve.core.errors import StoreBusy

    def locked(*args, **kwargs):
        raise StoreBusy("database is locked")

    monkeypatch.setattr(fake_server.store, "submit", locked)
    with fake_server.client() as http:
        response = http.post("/queue/fal-ai/flux/schnell", json={"prompt": "a cat"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error_type"] == "store_busy"
        assert http.get("/health").status_code == 200, "the API goes on"
