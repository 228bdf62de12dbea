"""The API process: HTTP (+ HTTPS) listeners over one app, plus the store's upkeep and webhook delivery.

Wiring only. Sockets are bound up front so port 0 works and callers learn the real ports before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from fluxserve.api.app import create_app
from fluxserve.blobs.open import open_blobs
from fluxserve.blobs.uploads import Uploads
from fluxserve.core.settings import ApiSettings, Settings
from fluxserve.processes import tls
from fluxserve.processes.connection_limits import ConnectionLimits, protocol_class
from fluxserve.processes.upkeep import Upkeep
from fluxserve.store.open import open_store

log = logging.getLogger(__name__)

# How long in-flight HTTP requests get to finish when the server stops.
GRACEFUL_SHUTDOWN_S = 10


class _QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, tls_handshake_timeout_s: float) -> None:
        super().__init__(config)
        self.tls_handshake_timeout_s = tls_handshake_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are handled once for the whole process (all listeners), not per listener.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for pre-bound sockets and no lifespan (how this server always runs), plus the
        TLS handshake timeout uvicorn does not pass: asyncio's default lets a silent TLS client hold a socket
        60 s, before the protocol (and so the header deadline and the connection cap) ever sees it."""
        assert sockets is not None, "ApiServer binds its sockets itself"
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        tls_options = {"ssl": config.ssl, "ssl_handshake_timeout": self.tls_handshake_timeout_s}
        tls_options = tls_options if config.ssl else {}
        self.servers = [
            await loop.create_server(create_protocol, sock=sock, backlog=config.backlog, **tls_options)
            for sock in sockets
        ]
        self.started = True


@dataclass
class Listener:
    scheme: str
    sock: socket.socket
    server: _QuietServer

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP.
    # Without it every response waits ~40 ms for the client's delayed ACK between its header and body writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen at once: connections made after the banner is printed wait in the backlog instead of being refused
    # while the event loop is still starting.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def webhook_dispatcher(settings: Settings, store: Any) -> Any:
    from fluxserve.net.safe_http import SafeClient
    from fluxserve.net.webhook_dispatch import WebhookDispatcher
    from fluxserve.net.webhooks import WebhookSigner

    hooks = settings.webhooks
    signer = WebhookSigner.load_or_create(settings.webhook_key_path)
    client = SafeClient(hooks.retry.client_policy(settings.urls))  # a webhook's own, shorter time limit
    return WebhookDispatcher(store, client, signer, hooks.retry, hooks.poll_interval_s,
                             concurrency=hooks.concurrency)  # fmt: skip


def connection_limits(api: ApiSettings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout_s=api.header_timeout_s, idle_timeout_s=api.idle_timeout_s,
        max_connections=api.max_connections,
    )  # fmt: skip


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings.store)
        self.blobs = open_blobs(settings.storage)
        self.dispatcher = webhook_dispatcher(settings, self.store)
        uploads = Uploads(self.blobs, settings.storage)  # one per process: its lock makes the quota exact here
        self.app = create_app(settings.api, self.store, self.blobs, self.dispatcher.signer,
                              admission=settings.admission, waiting=settings.waiting, uploads=uploads,
                              webhook_targets=self.dispatcher.targets)  # fmt: skip
        self.upkeep = Upkeep(self.store, self.blobs, settings.upkeep, settings.leases, uploads=uploads)
        self.limits = connection_limits(settings.api)
        # One protocol class for every listener: the connection cap counts the whole process.
        self.protocol = protocol_class(self.limits)
        self.listeners = self._bind_listeners()

    def _listener(self, **ssl: Any) -> _QuietServer:
        config = uvicorn.Config(
            self.app,
            lifespan="off",  # two listeners share one app; resources are owned here, not by the app
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            http=self.protocol,
            ws="none",  # no websocket routes; an upgrade would also leave the connection count
            timeout_keep_alive=self.limits.idle_timeout_s,  # type: ignore[arg-type]
            **ssl,
        )
        return _QuietServer(config, tls_handshake_timeout_s=self.limits.header_timeout_s)

    def _bind_listeners(self) -> list[Listener]:
        api = self.settings.api
        listeners = [Listener("http", bind(api.host, api.port), self._listener())]
        if api.tls_port is not None:
            cert, key = self.tls_files()
            listener = self._listener(ssl_certfile=str(cert), ssl_keyfile=str(key))
            listeners.append(Listener("https", bind(api.host, api.tls_port), listener))
        return listeners

    def tls_files(self) -> tuple[Any, Any]:
        api = self.settings.api
        if api.tls_cert and api.tls_key:
            return api.tls_cert, api.tls_key
        return tls.ensure_self_signed(self.settings.tls_dir)

    def url(self, scheme: str = "http") -> str:
        host = self.settings.api.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        for listener in self.listeners:
            if listener.scheme == scheme:
                return f"{scheme}://{shown}:{listener.port}"
        raise KeyError(scheme)

    @property
    def started(self) -> bool:
        return all(listener.server.started for listener in self.listeners)

    async def serve(self) -> None:
        self.upkeep.start()
        self.dispatcher.start()
        try:
            await asyncio.gather(*(li.server.serve(sockets=[li.sock]) for li in self.listeners))
        finally:
            self.app.state.services.changes.stop()
            self.dispatcher.stop()
            self.upkeep.stop()
            await self.store.aclose()
            self.store.close()

    def request_stop(self) -> None:
        """Idempotent: stop accepting, let in-flight requests finish, exit."""
        for listener in self.listeners:
            listener.server.should_exit = True


async def serve_until_signalled(server: ApiServer) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    await server.serve()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a status read costs less CPU), else None: asyncio's."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


def run_until_signalled(server: ApiServer) -> None:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve_until_signalled(server))
