"""Bounds on the API's connections, below the app: a deadline for each request's head, idle timeouts, and a
cap on open connections per process.

uvicorn's HTTP protocols arm their keep-alive timeout only after a response, and check `limit_concurrency`
only once a request's head has been parsed. So a client that connects and says nothing, or sends its headers
a byte at a time (slowloris), holds a connection for ever and is counted against nothing. The checks live in a
subclass of the protocol because it is where every connection starts and every byte arrives: one subclass per
parser, httptools (C, the default: a status read costs less CPU) and h11 (pure Python, used when httptools is
not installed or `parser="h11"` asks for it), sharing every rule through `_Guard`.

- The head of each request must be complete `header_timeout_s` after the connection opened (first request) or
  after its first byte (later ones; the silence between requests is the keep-alive timeout). It is a deadline,
  not an inactivity timer, so trickling a byte now and then does not extend it. Late: a 408, then close.
- While a request's body is being read, `idle_timeout_s` without a byte closes the connection (a stalled
  upload); a slow but moving upload is not cut off, nor one the app itself has paused by not reading.
- Beyond `max_connections` open connections, a new one is answered 503 at once, before any of its bytes is
  parsed, and closed as soon as its request has been read (at most REFUSAL_LINGER_S later): a flood costs a
  file descriptor for a moment and nothing else.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# How long a refused connection is kept to read the client's request before closing: closing a socket with
# unread bytes sends a reset, which can destroy the 503 before the client reads it.
REFUSAL_LINGER_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if min(self.header_timeout_s, self.idle_timeout_s) <= 0 or self.max_connections < 1:
            raise ValueError("connection timeouts must be positive and max_connections at least 1")


class _Gate:
    """The open connections of every listener in one process (they share one event loop, so no lock)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.refusing = 0


def _raw_response(status: str, detail: str, error_type: str, extra: tuple[str, ...] = ()) -> bytes:
    """A complete response in fal's error shape, written without h11 (no request has been parsed)."""
    body = json.dumps({"detail": detail, "error_type": error_type}).encode()
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}",
            f"x-fal-error-type: {error_type}", "connection: close", *extra]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


TOO_MANY = _raw_response("503 Service Unavailable", "Too many open connections; try again shortly",
                         "too_many_connections", ("retry-after: 1",))  # fmt: skip
HEADER_TIMEOUT = _raw_response("408 Request Timeout", "The request's headers did not arrive in time",
                               "request_timeout")  # fmt: skip


class _Guard:
    """The deadlines and the cap, for any uvicorn protocol: a subclass says which part of a request its parser
    is in (`_phase`) and whether a response has begun (`_answering`)."""

    gate: ClassVar[_Gate]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any
    client: Any

    def _init_guard(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind: str | None = None
        self._admitted = False
        self._refused = False

    def _phase(self) -> str | None:
        """ "head" while a request's head is incomplete or not begun, "body" while its body is read, else
        None."""
        raise NotImplementedError

    def _answering(self) -> bool:
        """Whether a request is being answered (a 408 written now would corrupt its response)."""
        raise NotImplementedError

    # --- connection life ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gate = self.gate
        if gate.open >= gate.limits.max_connections:
            self._refuse(transport)
            return
        gate.open += 1
        self._admitted = True
        super().connection_made(transport)  # type: ignore[misc]
        self._arm("header", gate.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._refused:
            self._refused = False
            self.gate.refusing -= 1
            return
        if self._admitted:
            self._admitted = False
            self.gate.open -= 1
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self.transport.close()  # the request has been read; closing now sends no reset
            return
        super().data_received(data)  # type: ignore[misc]
        self._watch()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        gate = self.gate
        self._refused = True
        gate.refusing += 1  # connection_lost gives it back, also after abort()
        if gate.refusing > gate.limits.max_connections:
            transport.abort()  # as many refusals lingering as connections open: no 503, no linger
            return
        transport.write(TOO_MANY)
        self._timer = self.loop.call_later(REFUSAL_LINGER_S, transport.close)

    # --- deadlines -------------------------------------------------------------------------------------

    def _watch(self) -> None:
        """After each chunk: which deadline, if any, now applies to this connection."""
        phase = self._phase()
        if phase == "head":
            # Bytes of a request head that is not complete yet: the deadline runs from the first of them.
            if self._timer_kind != "header":
                self._arm("header", self.gate.limits.header_timeout_s)
        elif phase == "body":
            self._arm("body", self.gate.limits.idle_timeout_s)  # re-armed by every chunk
        else:
            self._cancel()  # the request is in; what follows is the app's time, not the client's

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_kind = None, None

    def _expired(self) -> None:
        kind = self._timer_kind
        self._timer, self._timer_kind = None, None
        if self.transport.is_closing():
            return
        if kind == "body" and self.flow.read_paused:
            # The app is not reading (backpressure), so the client's silence is ours: wait again.
            self._arm("body", self.gate.limits.idle_timeout_s)
            return
        log.info("closing a connection from %s: %s timeout", self.client, kind)
        if kind == "header" and not self._answering():
            self.transport.write(HEADER_TIMEOUT)
        self.transport.close()


class GuardedH11Protocol(_Guard, H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the cap described above. Built by `protocol_class`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_guard()

    def _phase(self) -> str | None:
        state = self.conn.their_state
        return "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None

    def _answering(self) -> bool:
        return self.conn.our_state is not h11.IDLE


def _httptools_protocol() -> type | None:
    """The guarded httptools protocol, or None where httptools is not installed."""
    if importlib.util.find_spec("httptools") is None:
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the same deadlines and cap. httptools reports a request's parts
        by callbacks, so the phase is recorded as they fire (all of them within one data_received for a
        request that arrives in one chunk)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._init_guard()
            self._request_phase: str | None = "head"  # a new connection waits for its first head

        def _phase(self) -> str | None:
            return self._request_phase

        def _answering(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def on_message_begin(self) -> None:
            self._request_phase = "head"
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._request_phase = "body"
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._request_phase = None
            super().on_message_complete()

    return GuardedHttpToolsProtocol


PARSERS = ("auto", "httptools", "h11")


def protocol_class(limits: ConnectionLimits, parser: str = "auto") -> type[_Guard]:
    """A protocol class for uvicorn's `http=`, counting against one gate: pass the same class to every
    listener of the process so the cap is per process, not per port. `parser`: "auto" is httptools where it
    is installed, else h11; "httptools" without it is an error."""
    if parser not in PARSERS:
        raise ValueError(f"parser must be one of {', '.join(PARSERS)}, not {parser!r}")
    base = _httptools_protocol() if parser != "h11" else None
    if base is None and parser == "httptools":
        raise ValueError("parser='httptools' needs the httptools package (pip install httptools)")
    base = base or GuardedH11Protocol
    return type(base.__name__, (base,), {"gate": _Gate(limits)})
