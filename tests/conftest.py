"""Shared fixtures: settings under tmp_path, the tiny model (built once), live servers on free ports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.core.settings import (
    AdmissionSettings,
    ApiSettings,
    EngineSettings,
    ProvenanceSettings,
    RetryPolicy,
    Settings,
    StorageSettings,
    StoreSettings,
    UrlPolicy,
    WaitingSettings,
    WebhookSettings,
)
from tests.support.fakes import FakeEngine
from tests.support.s3_fixtures import s3_blobs, s3_server, s3_settings  # noqa: F401  (fixtures for every test)

# Tests send webhooks to receivers on loopback only, which the operator must allow explicitly.
LOOPBACK_ONLY = UrlPolicy(allowed_networks=("127.0.0.0/8",))
FAST_WEBHOOKS = WebhookSettings(RetryPolicy(max_attempts=4, first_delay_s=0.2, factor=2.0, timeout_s=5), poll_interval_s=0.05)


def make_settings(
    data_dir: Path, model_path: Path | None = None, admission: dict | None = None,
    waiting: dict | None = None, provenance: ProvenanceSettings | None = None, **api: Any,
) -> Settings:
    api.setdefault("port", 0)
    api.setdefault("tls_port", 0)
    return Settings(
        data_dir=data_dir,
        api=ApiSettings(**api),
        store=StoreSettings(db_path=data_dir / "jobs.sqlite3"),
        admission=AdmissionSettings(**(admission or {})),
        waiting=WaitingSettings(poll_interval_s=0.01, **(waiting or {})),
        storage=StorageSettings(root=data_dir / "files"),
        engine=EngineSettings(model_path=model_path or data_dir / "no-model"),
        webhooks=FAST_WEBHOOKS,
        urls=LOOPBACK_ONLY,
        provenance=provenance or ProvenanceSettings(),
    )


@dataclass
class LiveServer:
    """The real API process and a worker, as threads of the test process (engine injectable)."""

    api: Any
    worker: Any
    threads: list[threading.Thread]

    @property
    def store(self) -> Any:
        return self.api.store

    @property
    def url(self) -> str:
        return self.api.url("http")

    @property
    def https_url(self) -> str:
        return self.api.url("https")

    @property
    def cert(self) -> Path:
        return Path(self.api.tls_files()[0])

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        self.api.request_stop()
        self.worker.stop()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not stop"


def wait_ready(http: httpx.Client) -> None:
    """Until a worker's first report reaches the store (the server answers before the worker thread runs)."""
    deadline = time.monotonic() + 10
    while http.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the worker never reported ready"
        time.sleep(0.01)


def add_keys(store: Any, *names: str) -> dict[str, dict[str, str]]:
    """A new API key per name in the store; name -> the Authorization header that carries it."""
    from fluxserve.core.accounts import new_key

    keys = {}
    for name in names:
        key, credential = new_key(name)
        store.create_key(key)
        keys[name] = {"authorization": f"Key {credential}"}
    return keys


def serve_on_loop(api: Any, loop_factory: Any) -> None:
    """The API on the event loop `fluxserve serve` runs it on (uvloop where installed)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(api.serve())


def start_live_server(settings: Settings, engine: Any) -> LiveServer:
    from fluxserve.blobs.open import open_blobs
    from fluxserve.processes.api_process import ApiServer, event_loop_factory
    from fluxserve.processes.worker_process import image_fetcher, open_provenance
    from fluxserve.store.open import open_store
    from fluxserve.worker.loop import Worker, WorkerConfig

    api = ApiServer(settings)
    config = WorkerConfig.from_settings(settings, worker_id="test-worker", idle_sleep_s=0.005)
    blobs = open_blobs(settings.storage)
    worker = Worker(open_store(settings.store), blobs, engine, config, images=image_fetcher(settings, blobs),
                    provenance=open_provenance(settings))  # fmt: skip
    threads = [
        threading.Thread(target=serve_on_loop, args=(api, event_loop_factory()), name="api", daemon=True),
        threading.Thread(target=worker.run_forever, name="worker", daemon=True),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while not api.started:
        assert time.monotonic() < deadline, "server did not start"
        assert threads[0].is_alive(), "server thread died at start"
        time.sleep(0.01)
    return LiveServer(api=api, worker=worker, threads=threads)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


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
def tiny_redux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fluxserve.engine.tiny import build_tiny_redux

    return build_tiny_redux(tmp_path_factory.mktemp("models") / "flux-redux-tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path, tiny_redux_dir: Path) -> Any:
    from fluxserve.engine.flux import FluxEngine

    settings = EngineSettings(model_path=tiny_model_dir, device="cpu", redux_model_path=tiny_redux_dir)
    return FluxEngine.load(settings)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Any:
    """A tiny-model FluxEngine for one test module alone: its tests switch levels and teach the safety checker
    concepts, changes the session's tiny_engine (behind tiny_server) must never see."""
    from fluxserve.engine.flux import FluxEngine

    return FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu"))


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_engine: Any) -> Iterator[LiveServer]:
    """One live server on the real tiny model, over HTTP and HTTPS, for the end-to-end tests."""
    data_dir = tmp_path_factory.mktemp("tiny-server")
    settings = make_settings(data_dir, tls_port=0, max_pixels=1024 * 1024, redux_enabled=True)
    server = start_live_server(settings, tiny_engine)
    yield server
    server.stop()

