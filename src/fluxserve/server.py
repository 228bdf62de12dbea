"""The all-in-one service: the API on HTTP (+ HTTPS) and a worker thread, over one store and one blob folder.

Wiring only. Sockets are bound up front so port 0 works and callers learn the real ports before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from fluxserve import tls
from fluxserve.api.app import create_app
from fluxserve.config import Settings
from fluxserve.engine.worker import Engine, Worker, WorkerConfig
from fluxserve.queue.sqlite import SQLiteJobStore
from fluxserve.storage.local import LocalBlobStore

log = logging.getLogger(__name__)

# How long in-flight HTTP requests get to finish when the service stops.
GRACEFUL_SHUTDOWN_S = 10


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are handled once for the whole service (all listeners + worker), not per listener.
        yield


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
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class Service:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.store = SQLiteJobStore.open(settings.queue.db_path)
        self.blobs = LocalBlobStore.open(settings.storage.root)
        self.app = create_app(settings.api, settings.queue, self.store, self.blobs)
        self.worker = Worker(
            self.store,
            self.blobs,
            engine,
            WorkerConfig(worker_id=settings.worker_id, lease_s=settings.queue.lease_s),
        )
        self.listeners = self._bind_listeners()
        self._worker_thread = threading.Thread(target=self.worker.run_forever, name="worker", daemon=True)

    def _listener(self, **ssl: Any) -> _QuietServer:
        config = uvicorn.Config(
            self.app,
            lifespan="off",  # two listeners share one app; resources are owned here, not by the app
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            **ssl,
        )
        return _QuietServer(config)

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
        return all(e.server.started for e in self.listeners)

    async def serve(self) -> None:
        self._worker_thread.start()
        try:
            await asyncio.gather(*(e.server.serve(sockets=[e.sock]) for e in self.listeners))
        finally:
            self.worker.stop()
            # The job in flight finishes and records its terminal state before the store closes.
            await asyncio.to_thread(self._worker_thread.join)
            self.store.close()

    def request_stop(self) -> None:
        """Idempotent: stop accepting, finish in-flight work, exit."""
        for listener in self.listeners:
            listener.server.should_exit = True
        self.worker.stop()


async def serve_until_signalled(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.request_stop)
    await service.serve()
