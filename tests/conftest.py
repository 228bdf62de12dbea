"""Shared fixtures: settings under tmp_path, the tiny model (built once), live servers on free ports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.config import ApiSettings, EngineSettings, QueueSettings, Settings, StorageSettings
from tests.fakes import FakeEngine


def make_settings(data_dir: Path, model_path: Path | None = None, **api: Any) -> Settings:
    api.setdefault("port", 0)
    api.setdefault("tls_port", 0)
    return Settings(
        data_dir=data_dir,
        api=ApiSettings(**api),
        queue=QueueSettings(db_path=data_dir / "jobs.sqlite3", poll_interval_s=0.01),
        storage=StorageSettings(root=data_dir / "files"),
        engine=EngineSettings(model_path=model_path or data_dir / "no-model"),
    )


@dataclass
class LiveServer:
    service: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.service.url("http")

    @property
    def https_url(self) -> str:
        return self.service.url("https")

    @property
    def cert(self) -> Path:
        return Path(self.service.tls_files()[0])

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "service did not stop"


def start_live_server(settings: Settings, engine: Any) -> LiveServer:
    from fluxserve.server import Service

    service = Service(settings, engine)
    thread = threading.Thread(target=lambda: asyncio.run(service.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not service.started:
        assert time.monotonic() < deadline, "service did not start"
        assert thread.is_alive(), "service thread died at start"
        time.sleep(0.01)
    return LiveServer(service=service, thread=thread)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_server(tmp_path: Path, fake_engine: FakeEngine) -> Iterator[LiveServer]:
    """The real API, store, storage and worker, with a fake engine: fast API tests."""
    server = start_live_server(make_settings(tmp_path, tls_port=0), fake_engine)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fluxserve.engine.loading import quiet_libraries
    from fluxserve.engine.tiny import build_tiny_flux

    quiet_libraries()
    return build_tiny_flux(tmp_path_factory.mktemp("models") / "flux-schnell-tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Any:
    from fluxserve.engine.pipeline import FluxEngine

    return FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu"))


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_engine: Any) -> Iterator[LiveServer]:
    """One live server on the real tiny model, over HTTP and HTTPS, for the end-to-end tests."""
    data_dir = tmp_path_factory.mktemp("tiny-server")
    server = start_live_server(make_settings(data_dir, tls_port=0, max_pixels=1024 * 1024), tiny_engine)
    yield server
    server.stop()


__all__ = ["LiveServer", "make_settings", "replace", "start_live_server"]
