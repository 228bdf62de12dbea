"""Connections are bounded: raw sockets on loopback against a live server, as a slowloris client would send.

Each limit is small here (under a second, a handful of connections) so a test that would hang on a server
without the limit fails on its socket timeout instead.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, make_settings, start_live_server
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.abuse

HEADER_TIMEOUT_S = 0.6
IDLE_TIMEOUT_S = 0.6
# How much later than its deadline the server may close a connection (a loaded two-core machine).
SLACK_S = 2.0


@pytest.fixture(autouse=True, params=["httptools", "h11"])
def parser(request, monkeypatch) -> str:
    """Every limit holds on both of uvicorn's parsers: httptools (the default) and h11 (without httptools)."""
    from fluxserve.processes import api_process, connection_limits

    chosen = functools.partial(connection_limits.protocol_class, parser=request.param)
    monkeypatch.setattr(api_process, "protocol_class", chosen)
    return request.param


def live(tmp_path, **api) -> LiveServer:
    api.setdefault("header_timeout_s", HEADER_TIMEOUT_S)
    api.setdefault("idle_timeout_s", IDLE_TIMEOUT_S)
    return start_live_server(make_settings(tmp_path, **api), FakeEngine())


@pytest.fixture
def server(tmp_path) -> Iterator[LiveServer]:
    s = live(tmp_path)
    yield s
    s.stop()


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.api.listeners[0].port), timeout=SLACK_S + 5)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails the test if it is still open after `timeout`."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {timeout} s")
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_a_silent_connection_is_closed_after_the_header_timeout(server):
    started = time.monotonic()
    with connect(server) as sock:
        reply = read_until_closed(sock, HEADER_TIMEOUT_S + SLACK_S)
    assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
    assert reply.startswith(b"HTTP/1.1 408 ") and b'"error_type": "request_timeout"' in reply


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline_not_extended_by_each_byte(server):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    started = time.monotonic()
    with connect(server) as sock:
        closed = False
        for byte in request:  # one byte every 50 ms: 12 s in all, far beyond the 0.6 s deadline
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > HEADER_TIMEOUT_S + SLACK_S:
                break
        reply = read_until_closed(sock, SLACK_S) if not closed else b""
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 2 * SLACK_S
    assert b"200 OK" not in reply and (closed or reply.startswith(b"HTTP/1.1 408 ") or reply == b"")


def test_a_connection_idle_after_a_response_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(sock, IDLE_TIMEOUT_S + SLACK_S)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.count(b"HTTP/1.1") == 1


def test_a_stalled_request_body_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"POST /fal-ai/flux/schnell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"prompt\": ")  # fmt: skip
        reply = read_until_closed(sock, IDLE_TIMEOUT_S + SLACK_S)
    assert b"200 OK" not in reply


def test_a_well_behaved_client_is_served_over_keep_alive(server):
    with server.client() as http:
        for _ in range(3):
            assert http.get("/health").status_code == 200
            time.sleep(IDLE_TIMEOUT_S / 3)  # within the idle timeout: the same connection is reused


def test_a_silent_tls_connection_is_closed_after_the_header_timeout(server):
    port = server.api.listeners[1].port
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # no TLS handshake sent
        read_until_closed(sock, HEADER_TIMEOUT_S + SLACK_S)
    assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
    context = ssl.create_default_context(cafile=str(server.cert))
    with httpx.Client(base_url=server.https_url, verify=context) as https:
        assert https.get("/health").status_code == 200


def test_beyond_the_cap_new_connections_get_a_503_and_the_server_recovers(tmp_path):
    server = live(tmp_path, header_timeout_s=2.0, max_connections=5)
    try:
        flood = [connect(server) for _ in range(5)]  # silent: each holds a slot until its header deadline
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=5) as http:
            started = time.monotonic()
            refused = http.get("/health")
            assert refused.status_code == 503 and time.monotonic() - started < 1.5
            assert refused.json()["error_type"] == "too_many_connections" and refused.headers["retry-after"]
            context = ssl.create_default_context(cafile=str(server.cert))
            https_refused = httpx.get(f"{server.https_url}/health", verify=context, timeout=5)
            assert https_refused.status_code == 503, "the cap counts both listeners together"
            for sock in flood:
                read_until_closed(sock, 2.0 + SLACK_S)  # the header deadline ends the flood
                sock.close()
            time.sleep(0.1)
            assert http.get("/health").status_code == 200
    finally:
        server.stop()


def test_closing_flood_connections_frees_their_slots_at_once(tmp_path):
    server = live(tmp_path, header_timeout_s=30.0, max_connections=3)
    try:
        flood = [connect(server) for _ in range(3)]
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=5) as http:
            assert http.get("/health").status_code == 503
            for sock in flood:
                sock.close()
            time.sleep(0.2)
            assert http.get("/health").status_code == 200
    finally:
        server.stop()


def test_the_parser_is_the_one_asked_for_and_auto_prefers_httptools(parser):
    from fluxserve.processes.connection_limits import ConnectionLimits, protocol_class

    limits = ConnectionLimits()
    assert protocol_class(limits, parser).__name__ == {"httptools": "GuardedHttpToolsProtocol",
                                                       "h11": "GuardedH11Protocol"}[parser]  # fmt: skip
    assert protocol_class(limits).__name__ == "GuardedHttpToolsProtocol"
    with pytest.raises(ValueError, match="parser"):
        protocol_class(limits, "picohttp")
