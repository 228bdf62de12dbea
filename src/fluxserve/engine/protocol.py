"""What a worker may ask of an engine, and what it gets back. Torch-free: the worker's side reads these types
without loading the model's libraries (FluxEngine in engine/flux.py implements them; tests bring fakes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fluxserve.core.jobs import GenerationSpec
from fluxserve.core.settings import WarmupSettings


class Progress(Protocol):
    """What the engine reports while it works. Either method may raise JobCancelled to stop the job."""

    def stage(self, name: str) -> None: ...

    def step(self, step: int, total: int, previews: list[str] | None = None) -> None:
        """previews: when a spec of the batch asked for them, a JPEG data: URI of each image row's current
        latents, in batch order (engine/previews.py)."""


class NoProgress:
    def stage(self, name: str) -> None:
        return None

    def step(self, step: int, total: int, previews: list[str] | None = None) -> None:
        return None


@dataclass
class Generated:
    """One job's share of an engine call."""

    images: list[Any]  # PIL images, safety-checked
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    def generate_batch(
        self, specs: list[GenerationSpec], progress: Progress | None = None, images: list[Any] | None = None
    ) -> list[Generated]:
        """One result per spec, all in one pipeline call; images: each spec's input image (Redux)."""

    def warm_up(self, warmup: WarmupSettings) -> None:
        """Run the configured shapes once, so no request pays a first-call compile."""

    def gpu_memory_bytes(self) -> float | None:
        """Peak GPU memory allocated; None off the GPU."""

    def describe(self) -> dict[str, Any]:
        """What it runs: {"device", "levels": {level: [switch, ...]}, "skipped": {switch: reason}, ...}."""
