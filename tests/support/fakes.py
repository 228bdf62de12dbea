"""Fakes for fast tests: an engine with no torch, a blob store that can be held, and a clock moved by hand."""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fluxserve.core.jobs import GenerationSpec


class BatchingMixin:
    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        self.batches.append(len(specs))
        return [self.generate(spec, progress, image) for spec, image in zip(specs, images or [None] * len(specs))]


@dataclass
class FakeGenerated:
    images: list[Any]
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=lambda: {"inference": 0.001})


# What a CPU FluxEngine says of itself (FluxEngine.describe): nothing compiles or runs fp8 off CUDA.
CPU_DESCRIPTION = {
    "device": "cpu",
    "levels": {"none": [], "regular": ["fused_qkv", "channels_last_vae"],
               "high": ["fused_qkv", "channels_last_vae"]},  # fmt: skip
    "skipped": {"compile": "needs CUDA", "fp8": "needs a CUDA GPU of compute capability 8.9 or newer"},
}


def fake_previews(spec: GenerationSpec) -> list[str]:
    out = io.BytesIO()
    Image.new("RGB", (spec.width // 8, spec.height // 8), (200, 100, 50)).save(out, format="JPEG")
    return ["data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()] * spec.num_images


class FakeEngine(BatchingMixin):
    """Solid images whose colour comes from the seed. Prompts in `fail_on` raise, like a model error."""

    def __init__(
        self,
        fail_on: tuple[str, ...] = ("explode",),
        step_s: float = 0.0,
        description: dict | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        self.fail_on = fail_on
        self.step_s = step_s
        self.timings = timings
        self.description = CPU_DESCRIPTION if description is None else description
        self.warmed_up: list[Any] = []
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
                if spec.previews:  # as FluxEngine: one JPEG per image at the latent size
                    progress.step(step, spec.num_inference_steps, fake_previews(spec))
                else:
                    progress.step(step, spec.num_inference_steps)
        colours = [((s * 37) % 256, (s * 91) % 256, (s * 53) % 256) for s in spec.image_seeds]
        images = [Image.new("RGB", (spec.width, spec.height), colour) for colour in colours]
        generated = FakeGenerated(images=images, has_nsfw_concepts=[False] * len(images))
        if self.timings is not None:
            generated.timings = dict(self.timings)
        return generated

    def describe(self) -> dict[str, Any]:
        return self.description

    def gpu_memory_bytes(self) -> float | None:
        return None

    def warm_up(self, warmup: Any) -> None:
        self.warmed_up.append(warmup)


class FailingEngine:
    """Wraps a real engine; prompts in `fail_on` raise inside generation, everything else runs for real."""

    def __init__(self, engine: Any, fail_on: tuple[str, ...] = ("explode",)) -> None:
        self.engine = engine
        self.fail_on = fail_on

    def generate_batch(self, specs: list[GenerationSpec], progress: Any = None, images: Any = None) -> list[Any]:
        if any(spec.prompt in self.fail_on for spec in specs):
            raise RuntimeError(f"forced failure for prompt {specs[0].prompt!r}")
        return self.engine.generate_batch(specs, progress, images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)  # describe, warm_up, gpu_memory_bytes: the real engine's


class HeldBlobs:
    """Wraps a real blob store. While `hold` is clear every put (or put_at, as the worker stores images)
    waits, like a slow bucket (`waiting` is set once one does); `fail_next` makes the next one raise it,
    once."""

    def __init__(self, blobs: Any) -> None:
        self.blobs = blobs
        self.hold = threading.Event()
        self.hold.set()
        self.waiting = threading.Event()
        self.fail_next: Exception | None = None

    def _slow_write(self) -> None:
        self.waiting.set()
        self.hold.wait()
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        self._slow_write()
        return self.blobs.put(data, content_type, extension)

    def put_at(self, key: str, data: bytes) -> None:
        self._slow_write()
        self.blobs.put_at(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.blobs, name)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
