"""Typed settings, built once at the edge (the CLI) and passed down. Nothing here reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_PIXELS = 2048 * 2048
TINY_MODEL_SUBDIR = Path("models") / "flux-schnell-tiny"


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    # HTTPS port for fal_client, which hard-codes https://. None: no HTTPS; 0: any free port.
    tls_port: int | None = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Absolute base for image URLs (e.g. behind a proxy); else the URL the request came in on.
    public_url: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class QueueSettings:
    db_path: Path
    # How often a waiting request re-reads its job while no in-process notification arrives.
    poll_interval_s: float = 0.05
    lease_s: float = 60.0


@dataclass(frozen=True)
class StorageSettings:
    root: Path


@dataclass(frozen=True)
class EngineSettings:
    model_path: Path
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    # A folder holding a StableDiffusionSafetyChecker (+ its CLIP feature extractor). None: look next to
    # the model. Operators who run without one must say so explicitly (safety_disabled).
    safety_checker_path: Path | None = None
    safety_disabled: bool = False


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api: ApiSettings
    queue: QueueSettings
    storage: StorageSettings
    engine: EngineSettings
    worker_id: str = field(default="worker-0")

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"
