"""Fetching untrusted URLs (webhook targets and clients' image URLs) with limits on size, time and
redirects, and never into the operator's own network unless the operator allows it.

Why the address check lives in the network backend and not in front of the request: a URL can name a host
whose DNS answer changes between a check and the connect (DNS rebinding), and redirects or connection
retries open new connections the caller never sees. `GuardedBackend` sits where httpcore opens every TCP
connection: it resolves the host itself, checks every address, and connects to the checked IP, so what was
checked is what is connected to. TLS still verifies the original hostname, because httpcore passes
`server_hostname=<origin host>` to `start_tls` whatever address `connect_tcp` used.

httpcore is used directly because httpx's transport does not let a caller supply the network backend. Never
put a proxy in front of this client: the guard would then check the proxy's address, not the target's.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore

from fluxserve.core.errors import FluxserveError

# The policy is plain configuration (core/settings.py: the CLI's defaults are its defaults); enforced here.
from fluxserve.core.settings import DEFAULT_PORTS, UrlPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the IP addresses (as strings) the host resolves to. Injected in tests so no DNS is used.
Resolver = Callable[[str, int], list[str]]

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "fluxserve"
# Headers that must not follow a redirect to another origin (they were meant for the first one).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Reasons `allow_private` lets through. Link-local stays refused: 169.254.169.254 is the cloud metadata
# service, the classic SSRF prize; an operator who needs it names it in `allowed_networks`.
PRIVATE_REASONS = frozenset({"loopback", "private", "shared address space (CGNAT)", "site-local"})

# Ranges Python's `is_private`/`is_global` miss or get wrong in some versions (3.11.7 calls 192.0.0.8 global).
_EXTRA_NON_PUBLIC: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("100.64.0.0/10"), "shared address space (CGNAT)"),
    (ipaddress.ip_network("192.0.0.0/24"), "reserved"),
    (ipaddress.ip_network("198.18.0.0/15"), "reserved"),
    (ipaddress.ip_network("240.0.0.0/4"), "reserved"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A hostname as DNS writes it (underscores occur in real names); anything else is refused, not guessed at.
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
_HEX_LABEL = re.compile(r"^0x[0-9a-f]*$")
# urllib silently drops tabs/newlines and strips control characters, which other parsers may not do.
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")

# The wall-clock deadline of the request running in this thread/task; read by every socket operation.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("safe_http_deadline", default=None)

_HTTPCORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    httpcore.ConnectionNotAvailable,
)


class FetchError(FluxserveError):
    """The fetch failed: network error, timeout, body too large, too many redirects, bad URL.

    Network errors and timeouts may succeed on a later try; the subclasses below never will."""


class InvalidUrl(FetchError):
    """The URL is malformed or uses a scheme, credentials or port this client does not accept."""


class UnsafeUrl(FetchError):
    """The URL leads to an address that is not public (loopback, private, link-local...) and the policy
    does not allow it. Permanent: retrying cannot make the address public."""

    def __init__(self, address: str, reason: str, host: str | None = None) -> None:
        target = address if host is None or host == address else f"{host} ({address})"
        super().__init__(
            f"refusing to connect to {target}: {reason} address "
            "(an operator can allow it with --allow-private-urls or --allow-network)"
        )
        self.address = address
        self.reason = reason
        self.host = host


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    content: bytes
    url: str  # the final URL, after redirects


@dataclass(frozen=True)
class Target:
    """A URL split into the parts httpcore needs, validated once so httpcore never re-parses it."""

    scheme: str
    host: str  # lower-case hostname or bare IP literal (no brackets)
    port: int
    path: str  # path and query, ASCII, percent-encoded

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def authority(self) -> str:
        """host[:port] as the Host header and URLs write it (brackets around IPv6, default port left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"

    def httpcore_url(self) -> httpcore.URL:
        return httpcore.URL(
            scheme=self.scheme.encode(), host=self.host.encode(), port=self.port, target=self.path.encode()
        )


# --- address classification ---------------------------------------------------------------------------


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and is routed to: IPv4-mapped, 6to4, or NAT64."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> str | None:
    """None if ip is a public address, else a short reason it is not ("loopback", "private", ...)."""
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return classify(embedded)
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
    )
    for matched, reason in checks:
        if matched:
            return reason
    for network, reason in _EXTRA_NON_PUBLIC:
        if ip.version == network.version and ip in network:
            return reason
    if getattr(ip, "is_site_local", False):
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def check_address(ip: IPAddress, policy: UrlPolicy, host: str | None = None) -> None:
    """Raise UnsafeUrl unless ip is public or the policy allows it. host only improves the message."""
    if policy.allows_network(ip):
        return
    reason = classify(ip)
    if reason is None or (policy.allow_private and reason in PRIVATE_REASONS):
        return
    raise UnsafeUrl(str(ip), reason, host)


def parse_ip(host: str) -> IPAddress | None:
    """host as an IP address if it is one written in standard form, else None (it is a name to resolve)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --- URL validation ------------------------------------------------------------------------------------


def parse_url(url: str, policy: UrlPolicy) -> Target:
    """Split and validate url; raise InvalidUrl for anything this client does not fetch."""
    if _FORBIDDEN_URL_CHARS.search(url):
        raise InvalidUrl("URL contains whitespace, control characters or backslashes")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise InvalidUrl(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = ", ".join(policy.schemes)
        raise InvalidUrl(f"scheme {scheme or '(none)'!r} is not allowed (allowed: {allowed})")
    if "@" in parts.netloc:
        raise InvalidUrl("credentials in URLs are not supported")
    return Target(scheme, _host_of(parts), _port_of(parts, scheme), _path_of(parts))


def validate_url(url: str, policy: UrlPolicy) -> Target:
    """parse_url, plus refusing an unsafe IP-literal host without any DNS lookup. Good for rejecting a
    webhook URL when the request is submitted; names are checked again (resolved) when connecting."""
    target = parse_url(url, policy)
    literal = parse_ip(target.host)
    if literal is not None:
        check_address(literal, policy)
    return target


def _host_of(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname
    if not host:
        raise InvalidUrl("URL has no host")
    if parts.netloc.startswith("["):
        if isinstance(parse_ip(host), ipaddress.IPv6Address):
            return host
        raise InvalidUrl(f"invalid IPv6 literal {host!r}")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidUrl(f"invalid host name {host!r}") from exc
    if not _HOSTNAME.match(host):
        raise InvalidUrl(f"invalid host name {host!r}")
    literal = _ipv4_literal(host)
    return host if literal is None else str(literal)


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """host as the IPv4 address it spells, if its last label is a number: `127.0.0.1.` (the root's trailing
    dot), `127.1`, `0x7f.0.0.1`, `2130706433`. The system resolver answers these itself, without DNS, as
    browsers and the WHATWG URL standard read them; so they are parsed here, checked like the plain literal
    when the URL is validated (before any lookup), and connected to by address. Any other number-ended host
    is invalid."""
    name = host.removesuffix(".")
    last = name.rsplit(".", 1)[-1]
    if not (last.isdigit() or _HEX_LABEL.match(last)):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        raise InvalidUrl(f"invalid IPv4 address {host!r}") from None


def _port_of(parts: urllib.parse.SplitResult, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"invalid port in {parts.netloc!r}") from exc
    if port == 0:
        raise InvalidUrl("port 0 is not a port one can connect to")
    return DEFAULT_PORTS[scheme] if port is None else port


def _path_of(parts: urllib.parse.SplitResult) -> str:
    # Percent-encode what is not ASCII; existing escapes ("%") and reserved characters are kept as given.
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    query = urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return f"{path}?{query}" if query else path


# --- network backends ----------------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """host's addresses from the operating system's resolver, in its preferred order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to addresses the policy allows, and to the very IP it checked."""

    def __init__(
        self,
        policy: UrlPolicy,
        resolver: Resolver = system_resolver,
        backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._backend = backend if backend is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.checked_addresses(host, port)
        return self._connect_first(addresses, port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        # A local socket is by definition not a public address.
        raise UnsafeUrl(path, "unix socket")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """host's addresses, all of them checked: one unsafe answer refuses the host, so a name that
        resolves to a public and a private address cannot be used to reach the private one."""
        literal = parse_ip(host)
        addresses = [literal] if literal is not None else self._resolve(host, port)
        for ip in addresses:
            check_address(ip, self._policy, host)
        return addresses

    def _resolve(self, host: str, port: int) -> list[IPAddress]:
        # Resolution failures are network errors (maybe transient), so they surface as ConnectError.
        try:
            answers = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not answers:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        try:
            return [ipaddress.ip_address(answer) for answer in answers]
        except ValueError as exc:
            raise httpcore.ConnectError(f"resolver gave a bad address for {host}: {exc}") from exc

    def _connect_first(
        self,
        addresses: list[IPAddress],
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: Iterable[Any] | None,
    ) -> httpcore.NetworkStream:
        """Connect to the first address that answers (e.g. fall back to IPv4 when IPv6 is unreachable)."""
        options = list(socket_options or [])
        failure: Exception | None = None
        for ip in addresses:
            try:
                return self._backend.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure


def _time_left(timeout: float | None, on_expiry: type[Exception]) -> float | None:
    """timeout shortened to what is left before the current request's deadline; raise once it passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise on_expiry("total time limit of the request reached")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """Every read/write/handshake waits at most until the request's deadline, so a server that trickles a
    byte just before each read timeout cannot stretch a request past total_timeout_s."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Applies the request deadline to connecting and to every stream it opens."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host,
            port,
            timeout=_time_left(timeout, httpcore.ConnectTimeout),
            local_address=local_address,
            socket_options=socket_options,
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise UnsafeUrl(path, "unix socket")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


# --- the client ----------------------------------------------------------------------------------------


class SafeClient:
    """HTTP client for untrusted URLs. Thread-safe (httpcore's pool is); one per process is enough."""

    def __init__(
        self,
        policy: UrlPolicy | None = None,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.NetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 10,
    ) -> None:
        self.policy = policy if policy is not None else UrlPolicy()
        inner = _DeadlineBackend(backend if backend is not None else httpcore.SyncBackend())
        guarded = GuardedBackend(self.policy, resolver or system_resolver, inner)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=max_connections, network_backend=guarded
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
        """POST body to url. Redirects are not followed: a 3xx is returned as it came."""
        target = validate_url(url, self.policy)
        with self._deadline():
            return self._send("POST", target, headers or {}, body)

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        """GET url, following up to policy.max_redirects redirects, each hop validated like the first."""
        target = validate_url(url, self.policy)
        with self._deadline():
            return self._follow(target, dict(headers or {}))

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> SafeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        token = _deadline.set(time.monotonic() + self.policy.total_timeout_s)
        try:
            yield
        finally:
            _deadline.reset(token)

    def _follow(self, target: Target, headers: dict[str, str]) -> Response:
        for _hop in range(self.policy.max_redirects + 1):
            response = self._send("GET", target, headers, None)
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_CODES or not location:
                return response
            next_target = validate_url(urllib.parse.urljoin(target.url, location), self.policy)
            if next_target.origin != target.origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
            target = next_target
        raise FetchError(f"more than {self.policy.max_redirects} redirects")

    def _send(self, method: str, target: Target, headers: Mapping[str, str], body: bytes | None) -> Response:
        try:
            with self._pool.stream(
                method,
                target.httpcore_url(),
                headers=_request_headers(target, headers),
                content=body,
                extensions={"timeout": self._timeouts()},
            ) as response:
                _check_declared_length(response.headers, self.policy.max_bytes)
                content = _read_limited(response.iter_stream(), self.policy.max_bytes)
                return Response(response.status, _response_headers(response.headers), content, target.url)
        except httpcore.TimeoutException as exc:
            raise FetchError(f"{method} {target.url}: timed out ({exc or type(exc).__name__})") from exc
        except _HTTPCORE_ERRORS as exc:
            raise FetchError(f"{method} {target.url}: {exc or type(exc).__name__}") from exc

    def _timeouts(self) -> dict[str, float | None]:
        p = self.policy
        # Socket operations are clamped to the deadline by _DeadlineStream; waiting for a pooled connection
        # is not a socket operation, so the deadline is applied to it here.
        return {
            "connect": p.connect_timeout_s,
            "read": p.read_timeout_s,
            "write": p.read_timeout_s,
            "pool": _time_left(p.connect_timeout_s, httpcore.PoolTimeout),
        }


def _request_headers(target: Target, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    # Host is always ours: httpcore would write an IPv6 literal without brackets. The caller's spelling of
    # names is kept (receivers written against fal may look up "X-Fal-Webhook-Signature" case-sensitively).
    merged = {"user-agent": ("User-Agent", USER_AGENT), "accept-encoding": ("Accept-Encoding", "identity")}
    merged.update({name.lower(): (name, value) for name, value in headers.items() if name.lower() != "host"})
    return [("Host", target.authority), *merged.values()]


def _check_declared_length(headers: list[tuple[bytes, bytes]], max_bytes: int) -> None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit() and int(value) > max_bytes:
            raise FetchError(f"response of {int(value)} bytes is over the {max_bytes}-byte limit")


def _read_limited(chunks: Iterable[bytes], max_bytes: int) -> bytes:
    """The body, read chunk by chunk so that an endless body is cut off at max_bytes, not buffered."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"response body is over the {max_bytes}-byte limit")
        parts.append(chunk)
    return b"".join(parts)


def _response_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        merged[key] = f"{merged[key]}, {text}" if key in merged else text
    return merged
