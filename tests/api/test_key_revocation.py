"""API nodes cache verified keys, so an authenticated request reads no key record; revocation stays immediate:
`fluxserve keys revoke`, run as its own process against the node's store, refuses the key on that node's very
next request, on SQLite and on Redis."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from fluxserve.api.auth import REVOKED_KEY
from fluxserve.core.accounts import new_key
from tests.conftest import LiveServer, make_settings, start_live_server
from tests.support.fakes import FakeEngine


@pytest.fixture(params=["sqlite", "redis"])
def node(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[LiveServer, list[str]]]:
    """A live node with auth on, and the store flags that point `fluxserve keys` at the same store."""
    settings = make_settings(tmp_path, auth=True)
    flags = ["--data-dir", str(tmp_path)]
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        settings = dataclasses.replace(settings, store=dataclasses.replace(settings.store, store_url=url))
        flags += ["--store", url]
    server = start_live_server(settings, FakeEngine())
    yield server, flags
    server.stop()


def test_a_verified_key_is_not_read_from_the_store_again(node, monkeypatch):
    server, _ = node
    key, credential = new_key("team")
    server.store.create_key(key)
    headers = {"authorization": f"Key {credential}"}
    with server.client() as http:
        handle = http.post("/queue/fal-ai/flux/schnell", json={"prompt": "a"}, headers=headers).json()
        status = f"/queue/fal-ai/flux/requests/{handle['request_id']}/status"

        def no_key_reads(key_id: str) -> None:
            raise AssertionError(f"key {key_id} read again")

        monkeypatch.setattr(server.store, "get_key", no_key_reads)
        for _ in range(3):
            assert http.get(status, headers=headers).is_success


def test_a_key_revoked_by_the_cli_is_refused_on_the_next_request_of_a_node_that_has_it_cached(node):
    server, flags = node
    key, credential = new_key("team")
    other, other_credential = new_key("other team")
    server.store.create_key(key)
    server.store.create_key(other)
    headers = {"authorization": f"Key {credential}"}
    with server.client() as http:
        handle = http.post("/queue/fal-ai/flux/schnell", json={"prompt": "a"}, headers=headers).json()
        status = f"/queue/fal-ai/flux/requests/{handle['request_id']}/status"
        for _ in range(3):  # the first read verifies the key against the store; the next ones use the cache
            assert http.get(status, headers=headers).is_success
        other_headers = {"authorization": f"Key {other_credential}"}
        assert http.get(status, headers=other_headers).status_code == 404  # cached too: another key's job

        revoked = subprocess.run([sys.executable, "-m", "fluxserve", "keys", "revoke", key.key_id, *flags],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert revoked.returncode == 0 and f"revoked {key.key_id}" in revoked.stdout, revoked.stderr

        refused = http.get(status, headers=headers)
        assert refused.status_code == 401 and refused.json()["detail"] == REVOKED_KEY
        assert http.get(status, headers=other_headers).status_code == 404, "other keys stay valid"
        wrong_secret = {"authorization": f"Key {other.key_id}:{'0' * 32}"}
        assert http.get(status, headers=wrong_secret).status_code == 401, "a cached id needs its secret"
