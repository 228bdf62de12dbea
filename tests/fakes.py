"""Fakes for fast tests: an engine with no torch, and a clock tests move by hand."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fluxserve.jobs import GenerationSpec


class BatchingMixin:
    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        self.batches.append(len(specs))
        return [self.generate(spec, progress, image) for spec, image in zip(specs, images or [None] * len(specs))]


@dataclass
class FakeGenerated:
    images: list[Any]
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=lambda: {"inference": 0.001})


class FakeEngine(BatchingMixin):
    """Solid images whose colour comes from the seed. Prompts in `fail_on` raise, like a model error."""

    def __init__(self, fail_on: tuple[str, ...] = ("explode",), step_s: float = 0.0) -> None:
        self.fail_on = fail_on
        self.step_s = step_s
        # Clear it to hold every job at its first step (to build a queue behind it); set it to release.
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[GenerationSpec] = []
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def generate(self, spec: GenerationSpec, progress: Any = None, image: Any = None) -> Any:
        with self.lock:
            self.calls.append(spec)
        if spec.prompt in self.fail_on:
            raise RuntimeError(f"forced failure for prompt {spec.prompt!r}")
        if progress is not None:
            progress.stage("denoise")
            for step in range(1, spec.num_inference_steps + 1):
                self.gate.wait()
                time.sleep(self.step_s)
                progress.step(step, spec.num_inference_steps)
        colours = [((s * 37) % 256, (s * 91) % 256, (s * 53) % 256) for s in spec.image_seeds]
        images = [Image.new("RGB", (spec.width, spec.height), colour) for colour in colours]
        return FakeGenerated(images=images, has_nsfw_concepts=[False] * len(images))


class FailingEngine:
    """Wraps a real engine; prompts in `fail_on` raise inside generation, everything else runs for real."""

    def __init__(self, engine: Any, fail_on: tuple[str, ...] = ("explode",)) -> None:
        self.engine = engine
        self.fail_on = fail_on

    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        if any(spec.prompt in self.fail_on for spec in specs):
            raise RuntimeError(f"forced failure for prompt {specs[0].prompt!r}")
        return self.engine.generate_batch(specs, progress, images)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
