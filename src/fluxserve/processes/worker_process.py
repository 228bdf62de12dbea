"""The worker process: one engine on one device, claiming jobs from the store until told to stop.

Wiring only, and nothing of the HTTP server: this process imports neither uvicorn nor FastAPI.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from fluxserve.blobs.open import open_blobs
from fluxserve.core.settings import Settings
from fluxserve.net.image_inputs import ImageFetcher
from fluxserve.net.safe_http import SafeClient
from fluxserve.processes.exit_codes import ExitCode
from fluxserve.processes.gpus import pin_this_process
from fluxserve.provenance.credentials import CredentialsError
from fluxserve.provenance.stamp import Provenance
from fluxserve.store.open import open_store
from fluxserve.worker.loop import FatalWorkerError, Worker, WorkerConfig

log = logging.getLogger(__name__)


def own_origins(settings: Settings) -> tuple[str, ...]:
    """The origins this server's own /files/ URLs can carry (read from storage, never fetched)."""
    api = settings.api
    hosts = {api.host, "127.0.0.1", "localhost"} if api.host in ("127.0.0.1", "0.0.0.0", "::") else {api.host}
    origins = [f"http://{h}:{api.port}" for h in hosts]
    if api.tls_port:
        origins += [f"https://{h}:{api.tls_port}" for h in hosts]
    return tuple(origins) + ((api.public_url,) if api.public_url else ())


def image_fetcher(settings: Settings, blobs: Any) -> ImageFetcher:
    return ImageFetcher(SafeClient(settings.urls), blobs, own_origins(settings), settings.urls.max_bytes)


def open_provenance(settings: Settings) -> Provenance:
    """The marks this node's workers apply, and who signs them (generated on first start when no
    --c2pa-cert is given); logged, so an operator sees whether a development CA signs."""
    provenance = Provenance.open(settings.provenance, settings.provenance_dir)
    log.info("provenance marks: %s", provenance.describe())
    return provenance


def run_worker(settings: Settings) -> int:
    # Compiled kernels are cached beside the data, so a restarted worker reuses them instead of compiling again.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((settings.data_dir / "compile-cache").resolve()))
    if settings.gpu is not None:
        pin_this_process(os.environ, settings.gpu)  # `cuda` is then this GPU alone
    try:
        provenance = open_provenance(settings)
    except CredentialsError as exc:
        print(f"fluxserve worker {settings.worker_id}: cannot sign: {exc}", file=sys.stderr)
        return ExitCode.CONFIG_ERROR
    from fluxserve.engine.flux import FluxEngine  # torch: imported once the device is pinned

    engine = FluxEngine.load(settings.engine)
    blobs = open_blobs(settings.storage)
    worker = Worker(open_store(settings.store), blobs, engine, WorkerConfig.from_settings(settings),
                    images=image_fetcher(settings, blobs), provenance=provenance)  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())  # finish the job in flight, then exit
    try:
        worker.run_forever(settings.engine.warmup)
    except FatalWorkerError as exc:
        print(f"fluxserve worker {settings.worker_id}: device is suspect, exiting: {exc}", file=sys.stderr)
        return ExitCode.FATAL_WORKER
    return ExitCode.OK
