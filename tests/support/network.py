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
