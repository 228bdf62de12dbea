"""Fetching untrusted URLs: which addresses are refused, that refusal happens before any connection, and the
size/time/redirect limits. Real traffic goes only to servers on 127.0.0.1 started here; public addresses
are only classified or handed to a fake backend that never opens a socket."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest

from fluxserve.net.safe_http import (
    FetchError,
    GuardedBackend,
    InvalidUrl,
    SafeClient,
    UnsafeUrl,
    UrlPolicy,
    check_address,
    classify,
    validate_url,
)
from fluxserve.processes.tls import ensure_self_signed
from tests.support.network import FailingBackend

pytestmark = pytest.mark.abuse

LOOPBACK = ("127.0.0.1/32",)
MAX_BYTES = 1000


def local_policy(**overrides: object) -> UrlPolicy:
    """Loopback allowed explicitly, small limits so the limit tests are fast."""
    values: dict[str, object] = dict(
        allowed_networks=LOOPBACK, max_bytes=MAX_BYTES, connect_timeout_s=2, read_timeout_s=0.3,
        total_timeout_s=5, max_redirects=3,
    )  # fmt: skip
    values.update(overrides)
    return UrlPolicy(**values)  # type: ignore[arg-type]


# --- fakes -----------------------------------------------------------------------------------------------


class Sentinel(Exception):
    """Raised by the recording backend instead of opening a socket."""


class RecordingBackend(httpcore.NetworkBackend):
    """Records what it is asked to connect to; then raises `fail_with` (nothing leaves the machine) or,
    if given a real backend, connects through it."""

    def __init__(
        self, real: httpcore.NetworkBackend | None = None, fail_with: dict[str, Exception] | None = None
    ) -> None:
        self.calls: list[tuple[str, int]] = []
        self._real = real
        self._fail_with = fail_with or {}

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.calls.append((host, port))
        if host in self._fail_with:
            raise self._fail_with[host]
        if self._real is None:
            raise Sentinel(f"would connect to {host}:{port}")
        return self._real.connect_tcp(host, port, timeout, local_address, socket_options)


def fake_resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            pytest.fail(f"unexpected DNS lookup of {host!r}")
        return table[host]

    return resolve


def no_dns(host: str, port: int) -> list[str]:
    pytest.fail(f"DNS lookup of {host!r} where none was needed")


# --- address classification --------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("192.0.0.8", "reserved"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "93.184.216.34", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_addresses_are_classified_and_refused(address, reason):
    ip = ipaddress.ip_address(address)
    assert classify(ip) == reason
    with pytest.raises(UnsafeUrl, match=re.escape(f"{ip}: {reason} address")):
        check_address(ip, UrlPolicy())


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_accepted(address):
    ip = ipaddress.ip_address(address)
    assert classify(ip) is None
    check_address(ip, UrlPolicy())  # no exception


def test_allow_private_lets_loopback_and_private_through_but_not_metadata():
    policy = UrlPolicy(allow_private=True)
    for address in ("127.0.0.1", "::1", "10.0.0.5", "192.168.1.1", "100.64.0.1", "::ffff:127.0.0.1"):
        check_address(ipaddress.ip_address(address), policy)
    for address in ("169.254.169.254", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(UnsafeUrl):
            check_address(ipaddress.ip_address(address), policy)


def test_allowed_networks_let_exactly_those_networks_through():
    policy = UrlPolicy(allowed_networks=("127.0.0.1/32", "169.254.169.254/32"))
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"):
        check_address(ipaddress.ip_address(address), policy)
    for address in ("127.0.0.2", "::1", "10.0.0.1"):
        with pytest.raises(UnsafeUrl):
            check_address(ipaddress.ip_address(address), policy)


def test_bad_policies_fail_when_built():
    for bad in (dict(allowed_networks=("not-a-cidr",)), dict(schemes=("ftp",)), dict(max_bytes=0)):
        with pytest.raises(ValueError):
            UrlPolicy(**bad)  # type: ignore[arg-type]


# --- URL validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/no-scheme",
        "http://user:pw@example.com/",
        "http://example.com@10.0.0.1/",
        "http:///no-host",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com\\@10.0.0.1/",
        "http://[::1/",
        "http://bad%host/",
        "http://example.123/",  # ends in a number, so an IPv4 address, and not a valid one
        "http://1.2.3.4.5/",
    ],
)
def test_malformed_or_unsupported_urls_are_invalid(url):
    with pytest.raises(InvalidUrl):
        validate_url(url, UrlPolicy())


def test_unsafe_ip_literals_are_refused_without_dns_or_connecting():
    client = SafeClient(UrlPolicy(), resolver=no_dns, backend=FailingBackend())
    for url in ("http://127.0.0.1/", "http://[::1]:8080/", "https://169.254.169.254/latest/meta-data",
                "http://[::ffff:10.0.0.1]/"):  # fmt: skip
        with pytest.raises(UnsafeUrl):
            client.get(url)
        with pytest.raises(UnsafeUrl):
            client.post(url, b"{}", {})


# The root's trailing dot and the legacy spellings getaddrinfo answers itself: IP literals, never DNS names.
ODD_LITERALS = ["http://127.0.0.1./", "https://169.254.169.254./latest/meta-data", "http://10.0.0.1.:8080/",
                "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/",
                "http://0177.0.0.1./"]  # fmt: skip


@pytest.mark.parametrize("url", ODD_LITERALS)
def test_odd_spellings_of_ip_literals_are_parsed_and_refused_without_dns(url):
    with pytest.raises(UnsafeUrl):
        validate_url(url, UrlPolicy())
    client = SafeClient(UrlPolicy(), resolver=no_dns, backend=FailingBackend())
    with pytest.raises(UnsafeUrl):
        client.get(url)
    with pytest.raises(UnsafeUrl):
        client.post(url, b"{}", {})


def test_odd_spellings_of_ip_literals_are_allowed_like_the_plain_literal():
    assert validate_url("http://127.0.0.1.:8080/x", UrlPolicy(allowed_networks=LOOPBACK)).host == "127.0.0.1"
    assert validate_url("http://127.1/", UrlPolicy(allow_private=True)).url == "http://127.0.0.1/"
    recorder = RecordingBackend()
    with pytest.raises(Sentinel):
        SafeClient(UrlPolicy(), resolver=no_dns, backend=recorder).get("http://8.8.8.8./")
    assert recorder.calls == [("8.8.8.8", 80)], "connected by address, with no lookup"


def test_url_parts_are_normalised():
    target = validate_url("HTTPS://Hook.Example:8443/a%20b/ü?q=1#frag", UrlPolicy())
    assert (target.scheme, target.host, target.port) == ("https", "hook.example", 8443)
    assert target.path == "/a%20b/%C3%BC?q=1"
    assert validate_url("http://[2606:4700::1111]/", UrlPolicy()).authority == "[2606:4700::1111]"


# --- refusal as a unit: resolve, classify, refuse; the connector must never be called -------------------

UNSAFE_DNS = {
    "hook.example": ["10.0.0.5"],
    "meta.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "mapped.example": ["::ffff:192.168.0.1"],
}


@pytest.mark.parametrize("host", sorted(UNSAFE_DNS))
def test_hosts_resolving_to_unsafe_addresses_are_refused_before_connecting(host):
    backend = GuardedBackend(UrlPolicy(), resolver=fake_resolver(UNSAFE_DNS), backend=FailingBackend())
    with pytest.raises(UnsafeUrl, match=host):
        backend.connect_tcp(host, 443)
    with SafeClient(UrlPolicy(), resolver=fake_resolver(UNSAFE_DNS), backend=FailingBackend()) as client:
        with pytest.raises(UnsafeUrl):
            client.get(f"https://{host}/hook")
        with pytest.raises(UnsafeUrl):
            client.post(f"http://{host}:8080/hook", b"{}", {"Content-Type": "application/json"})


def test_unix_sockets_are_refused():
    backend = GuardedBackend(UrlPolicy(), resolver=no_dns, backend=FailingBackend())
    with pytest.raises(UnsafeUrl):
        backend.connect_unix_socket("/run/x.sock")


def test_a_public_host_is_connected_by_its_resolved_ip_not_its_name():
    recorder = RecordingBackend()
    dns = fake_resolver({"public.example": ["93.184.216.34"]})
    client = SafeClient(UrlPolicy(), resolver=dns, backend=recorder)
    with pytest.raises(Sentinel):
        client.get("https://public.example/image.png")
    with pytest.raises(Sentinel):
        client.post("http://public.example:8080/hook", b"{}", {})
    assert recorder.calls == [("93.184.216.34", 443), ("93.184.216.34", 8080)]


def test_the_next_checked_address_is_tried_when_the_first_does_not_answer():
    recorder = RecordingBackend(fail_with={"2606:4700::1111": httpcore.ConnectError("network unreachable")})
    dns = fake_resolver({"dual.example": ["2606:4700::1111", "93.184.216.34"]})
    with pytest.raises(Sentinel):
        SafeClient(UrlPolicy(), resolver=dns, backend=recorder).get("http://dual.example/")
    assert recorder.calls == [("2606:4700::1111", 80), ("93.184.216.34", 80)]


def test_resolution_failure_is_a_fetch_error_not_a_refusal():
    def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(FetchError) as info:
        SafeClient(UrlPolicy(), resolver=broken, backend=FailingBackend()).get("http://nowhere.example/")
    assert not isinstance(info.value, UnsafeUrl)


# --- real traffic, to 127.0.0.1 only --------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 (the default): every response ends the connection, so bodies without a length work."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        path = self.path
        if path == "/hello":
            self._reply(200, b"hello", {"X-Thing": "1"})
        elif path == "/big-declared":
            self._reply(200, b"x" * (MAX_BYTES + 1))
        elif path == "/big-streamed":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the connection does
            for _ in range(10):
                self.wfile.write(b"y" * 500)
        elif path.startswith("/redirect/"):
            hops = int(path.rsplit("/", 1)[1])
            if hops == 0:
                self._reply(200, b"arrived")
            else:
                self._reply(302, b"", {"Location": f"/redirect/{hops - 1}"})
        elif path.startswith("/redirect-to?"):
            self._reply(302, b"", {"Location": path.split("?", 1)[1]})
        elif path == "/slow":
            time.sleep(1.0)
            self._reply(200, b"late")
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "20")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._reply(404, b"no")

    def do_POST(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/echo":
            self._reply(200, body, {"X-Got-Type": self.headers.get("Content-Type", "")})
        elif self.path == "/post-redirect":
            self._reply(307, b"", {"Location": "/hello"})
        else:
            self._reply(404, b"no")

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[str] = []

    def handle_error(self, request, client_address) -> None:
        pass  # the client hangs up on purpose in the limit tests


@contextmanager
def serve(server: QuietServer) -> Iterator[QuietServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def local_server() -> Iterator[QuietServer]:
    with serve(QuietServer(("127.0.0.1", 0), Handler)) as server:
        yield server


@pytest.fixture
def base(local_server: QuietServer) -> str:
    return f"http://127.0.0.1:{local_server.server_address[1]}"


@pytest.fixture
def client() -> Iterator[SafeClient]:
    with SafeClient(local_policy()) as c:
        yield c


def test_get_and_post_work_against_an_allowed_local_server(client, base):
    response = client.get(f"{base}/hello")
    assert (response.status_code, response.content, response.url) == (200, b"hello", f"{base}/hello")
    assert response.headers["x-thing"] == "1"
    posted = client.post(f"{base}/echo", b'{"a":1}', {"Content-Type": "application/json"})
    assert (posted.status_code, posted.content) == (200, b'{"a":1}')
    assert posted.headers["x-got-type"] == "application/json"


def test_bodies_over_the_limit_are_refused(client, base):
    with pytest.raises(FetchError, match="limit"):
        client.get(f"{base}/big-declared")  # refused on Content-Length
    with pytest.raises(FetchError, match="limit"):
        client.get(f"{base}/big-streamed")  # no length: cut off while reading


def test_redirects_are_followed_up_to_the_limit(client, base):
    response = client.get(f"{base}/redirect/3")
    assert (response.status_code, response.content, response.url) == (200, b"arrived", f"{base}/redirect/0")
    with pytest.raises(FetchError, match="redirects"):
        client.get(f"{base}/redirect/4")


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:6379/_"])
def test_redirects_to_other_schemes_are_refused(client, base, location):
    with pytest.raises(InvalidUrl, match="scheme"):
        client.get(f"{base}/redirect-to?{location}")


def test_redirects_to_unsafe_addresses_are_refused(client, base, local_server):
    with pytest.raises(UnsafeUrl):
        client.get(f"{base}/redirect-to?http://169.254.169.254/latest/meta-data")


def test_post_does_not_follow_redirects(client, base, local_server):
    before = list(local_server.requests)
    response = client.post(f"{base}/post-redirect", b"{}", {})
    assert (response.status_code, response.headers["location"]) == (307, "/hello")
    assert local_server.requests[len(before):] == ["/post-redirect"]


def test_a_slow_server_hits_the_read_timeout(client, base):
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        client.get(f"{base}/slow")
    assert time.monotonic() - started < 0.9


def test_the_total_deadline_bounds_a_server_that_trickles(base):
    # Each byte comes well within the read timeout; only the total deadline can stop it.
    with SafeClient(local_policy(read_timeout_s=0.5, total_timeout_s=0.3)) as client:
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            client.get(f"{base}/drip")
    assert time.monotonic() - started < 0.8


def test_loopback_is_refused_unless_allowed(base, local_server):
    before = len(local_server.requests)
    # Spy on the real backend: it must not be asked to connect at all.
    spy = RecordingBackend(real=httpcore.SyncBackend())
    dns = fake_resolver({"local.test": ["127.0.0.1"]})
    with SafeClient(UrlPolicy(), resolver=dns, backend=spy) as strict:
        with pytest.raises(UnsafeUrl):
            strict.get(f"{base}/hello")
        port = local_server.server_address[1]
        with pytest.raises(UnsafeUrl, match="local.test"):
            strict.post(f"http://local.test:{port}/echo", b"{}", {})
    assert spy.calls == []
    assert len(local_server.requests) == before


# --- TLS: connected by IP, verified by name --------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[QuietServer, Path]]:
    cert, key = ensure_self_signed(tmp_path_factory.mktemp("tls"))  # valid for localhost and 127.0.0.1
    server = QuietServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serve(server):
        yield server, cert


def test_tls_verifies_the_url_hostname_while_connecting_to_the_checked_ip(tls_server):
    server, cert = tls_server
    port = server.server_address[1]
    spy = RecordingBackend(real=httpcore.SyncBackend())
    dns = fake_resolver({"localhost": ["127.0.0.1"], "wrong-name.test": ["127.0.0.1"]})
    trust = ssl.create_default_context(cafile=str(cert))
    with SafeClient(local_policy(), resolver=dns, backend=spy, ssl_context=trust) as client:
        response = client.get(f"https://localhost:{port}/hello")
        assert (response.status_code, response.content) == (200, b"hello")
        # Same IP, but the certificate does not name this host: verification must use the URL's name.
        with pytest.raises(FetchError, match="Hostname mismatch"):
            client.get(f"https://wrong-name.test:{port}/hello")
    assert spy.calls == [("127.0.0.1", port), ("127.0.0.1", port)]
