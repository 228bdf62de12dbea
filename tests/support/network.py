"""A network backend for refusal tests: being asked to connect at all is the failure."""

from __future__ import annotations

import httpcore
import pytest


class FailingBackend(httpcore.NetworkBackend):
    """Hand it to SafeClient or GuardedBackend where every address must be refused before any connection."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore
        pytest.fail(f"connect_tcp({host!r}, {port}) was called for an address that must be refused")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore
        pytest.fail("connect_unix_socket was called")


# The hosts a client derives from `localhost` as fal's do (queue.<host>, rest.<host>); most resolvers leave
# them unresolved (only systemd's resolves every *.localhost).
LOOPBACK_SUBDOMAINS = frozenset({"queue.localhost", "rest.localhost"})


@pytest.fixture
def loopback_subdomains(monkeypatch):
    """queue.localhost and rest.localhost resolve to 127.0.0.1 in this process; every other name as before."""
    import socket

    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        return resolve("127.0.0.1" if name in LOOPBACK_SUBDOMAINS else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
