"""FluxEngine: a loaded FLUX.1 [schnell] pipeline (+ safety checker, + Redux prior) that turns
GenerationSpecs into images. generate_batch reads as the steps it runs: conditioning -> denoise -> decode ->
safety, each a free function (engine/sampling.py, engine/safety.py) over the loaded pipeline."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fluxserve.core.errors import GenerationError, is_device_fatal
from fluxserve.core.jobs import GenerationSpec
from fluxserve.core.settings import AccelSettings, EngineSettings, WarmupSettings
from fluxserve.engine.accel import Accelerator, explain
from fluxserve.engine.cache import EmbeddingCache
from fluxserve.engine.checkpoints import load_transformer
from fluxserve.engine.images import to_pil, to_pixels
from fluxserve.engine.loading import load_flux_pipeline
from fluxserve.engine.model_check import require_model
from fluxserve.engine.placement import Placement, resolve_placement
from fluxserve.engine.previews import latent_previews
from fluxserve.engine.protocol import Generated, NoProgress, Progress
from fluxserve.engine.redux import ReduxPrior
from fluxserve.engine.safety import SafetyChecker, check_safety
from fluxserve.engine.sampling import decode, denoise, encode_text, split

log = logging.getLogger(__name__)


class StageTimer:
    """Reports each stage as it starts and records how long each took.

    GPU work is asynchronous: without waiting for the device at the end of a stage, its kernels would be billed
    to whichever later stage first waits (the denoise time landed in "decode"). Each stage depends on the one
    before, so the wait costs nothing."""

    def __init__(self, progress: Progress, synchronize: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.progress = progress
        self.synchronize = synchronize
        self.clock = clock
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress.stage(name)
        started = self.clock()
        yield
        self.synchronize()
        self.timings[name.replace(" ", "_")] = self.clock() - started


# --memory low serves every level from one fp8 model under offload hooks: per-level module swaps and fusing
# (which cannot run over fp8 weights) are off.
LOW_MEMORY_DISABLED = frozenset({"fused_qkv", "fp8", "compile", "cuda_graphs"})


def fit_small_gpu(pipe: Any, placement: Placement) -> None:
    """--memory low: the transformer's block linears in fp8 (weight-only, about half the bf16 size) for every level,
    and each component moved to the GPU only while it runs (diffusers' model offload). The pipeline arrives still
    in CPU memory (never moved whole to the GPU: ~34 GB would not fit 24 GB) and is quantised there."""
    try:
        from torchao.quantization import Float8WeightOnlyConfig, quantize_

        from fluxserve.engine.switches import fp8_eligible

        quantize_(pipe.transformer, Float8WeightOnlyConfig(), filter_fn=fp8_eligible)
    except Exception as exc:  # noqa: BLE001 - a missing or broken torchao costs the memory saving, not the load
        log.warning("memory mode low: no fp8 (%s); the transformer stays in %s", explain(exc), placement.dtype_name)
    pipe.enable_model_cpu_offload(device=placement.device)


@dataclass
class FluxEngine:
    pipe: Any
    safety: SafetyChecker | None
    placement: Placement
    redux: ReduxPrior | None = None
    text_cache: EmbeddingCache = field(default_factory=EmbeddingCache)
    accel: Accelerator = field(default_factory=Accelerator)
    shapes_seen: set[tuple[int, int, str, int]] = field(default_factory=set)
    _description: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, settings: EngineSettings) -> FluxEngine:
        root = require_model(settings)  # before importing torch: a bad folder or file fails in a second
        placement = resolve_placement(settings.device, settings.dtype)
        components = {}
        if settings.model_path.is_file():
            components["transformer"] = load_transformer(settings.model_path, root, placement)
        low_memory = settings.memory == "low" and placement.device == "cuda"
        if settings.memory == "low" and not low_memory:
            log.info("memory mode low: needs a CUDA GPU; ignored on %s", placement.device)
        pipe = load_flux_pipeline(root, placement, move=not low_memory, **components)
        accel = settings.accel
        if low_memory:
            fit_small_gpu(pipe, placement)
            accel = dataclasses.replace(accel, disabled=accel.disabled | LOW_MEMORY_DISABLED)
        safety = None
        if not settings.safety_disabled:
            safety = SafetyChecker.load(settings.safety_checker_path or root, placement)
        else:
            log.warning("safety checker disabled by the operator: has_nsfw_concepts is always false")
        redux = ReduxPrior.load(settings.redux_model_path, placement) if settings.redux_model_path else None
        return cls.from_pipeline(pipe, safety, placement, accel, redux=redux,
                                 text_cache=EmbeddingCache(settings.text_cache_size))  # fmt: skip

    @classmethod
    def from_pipeline(cls, pipe: Any, safety: SafetyChecker | None, placement: Placement,
                      accel: AccelSettings | None = None, **fields: Any) -> FluxEngine:  # fmt: skip
        """An engine over an already built pipeline (the benchmark's random full-size weights, tests)."""
        engine = cls(pipe=pipe, safety=safety, placement=placement, **fields)
        engine.accel = Accelerator.prepare(engine, accel)
        return engine

    def generate(self, spec: GenerationSpec, progress: Progress | None = None, image: Any = None) -> Generated:
        return self.generate_batch([spec], progress, [image])[0]

    def generate_batch(
        self, specs: list[GenerationSpec], progress: Progress | None = None, images: list[Any] | None = None
    ) -> list[Generated]:
        """Several compatible jobs (same kind, size, steps, level) as ONE pipeline call: their conditionings and
        one generator per image are concatenated, so each job gets what it would alone, up to float rounding."""
        import torch

        first = specs[0]
        self.note_shape(specs)
        timer = StageTimer(progress or NoProgress(), self.placement.synchronize)
        with torch.inference_mode(), self.accel.level(first.acceleration, self):
            with timer.stage("text encode" if first.kind == "text" else "image encode"):
                parts = [self.conditioning(s, img) for s, img in zip(specs, images or [None] * len(specs))]
                prompt_embeds = torch.cat([p[0] for p in parts])
                pooled = torch.cat([p[1] for p in parts])
            with timer.stage("denoise"):
                seeds_all = [seed for s in specs for seed in s.image_seeds]
                preview = None
                if any(spec.previews for spec in specs):  # a /stream job on a server showing previews
                    preview = functools.partial(latent_previews, self.pipe, height=first.height,
                                                width=first.width)  # fmt: skip
                latents = denoise(self.pipe, first, prompt_embeds, pooled, seeds_all, timer.progress, preview)
            with timer.stage("vae decode"):
                pixels = to_pixels(decode(self.pipe, latents, first.height, first.width))
            checked = [spec.enable_safety_checker for spec in specs for _ in range(spec.num_images)]
            flags = [False] * len(checked)
            if self.safety is not None and any(checked):
                with timer.stage("safety"):
                    flags = check_safety(self.safety, pixels, checked)
            with timer.stage("to image"):
                pil_images = to_pil(pixels)
        timings = {"inference": sum(timer.timings.values()), **timer.timings}
        sizes = [s.num_images for s in specs]
        return [Generated(images=imgs, has_nsfw_concepts=job_flags, timings=dict(timings))
                for imgs, job_flags in zip(split(pil_images, sizes), split(flags, sizes))]  # fmt: skip

    def gpu_memory_bytes(self) -> float | None:
        if self.placement.device != "cuda":
            return None
        import torch

        return float(torch.cuda.max_memory_allocated())

    def warmup_levels(self) -> tuple[str, ...]:
        """What warms up when the operator names no levels: the ones that compile here."""
        compiling = tuple(level for level in ("regular", "high") if "compile" in self.accel.applied(level))
        return compiling or ("none",)

    def warm_up(self, warmup: WarmupSettings) -> None:
        """Run each configured (size, level, batch) once, so compiled kernels exist before the first request. A
        level that fails here loses its riskiest optimisation and is tried again: it serves, only slower."""
        levels = warmup.levels if warmup.levels is not None else self.warmup_levels()
        for level in levels:
            for width, height in warmup.sizes:
                for batch in warmup.batches:
                    self.warm_shape(width, height, level, batch)

    def warm_shape(self, width: int, height: int, level: str, batch: int) -> None:
        spec = GenerationSpec(kind="text", prompt="warm-up", width=width, height=height, num_inference_steps=1,
                              seed=0, num_images=1, guidance_scale=3.5, enable_safety_checker=True,
                              output_format="png", sync_mode=False, acceleration=level, base_url="")  # fmt: skip
        while True:
            started = time.perf_counter()
            try:
                self.generate_batch([spec] * batch)
            except Exception as exc:
                culprit = self.accel.riskiest(level)
                if is_device_fatal(exc) or culprit is None:
                    raise  # the device is suspect, or the plain model itself fails: nothing left to drop
                self.accel.drop(level, culprit, f"failed warming up {width}x{height}, batch {batch}: {explain(exc)}")
                self._description = None
                continue
            log.info("warm-up %dx%d at %s, batch %d: %.2f s", width, height, level, batch, time.perf_counter() - started)
            return

    def describe(self) -> dict[str, Any]:
        """What this engine runs on and what each level really runs with (read from the modules; cached until an
        optimisation is dropped)."""
        if self._description is None:
            self._description = {"device": self.placement.describe(), **self.accel.describe(self)}
        return self._description

    def note_shape(self, specs: list[GenerationSpec]) -> None:
        """Compiled levels compile once per new shape; say so, so a slow first request is explained in the log."""
        first = specs[0]
        shape = (first.width, first.height, first.acceleration, sum(s.num_images for s in specs))
        if shape not in self.shapes_seen:
            self.shapes_seen.add(shape)
            if "compile" in self.accel.applied(first.acceleration):
                log.info("new shape %dx%d at %s, %d images: compiling it once", *shape)

    def conditioning(self, spec: GenerationSpec, image: Any) -> tuple[Any, Any]:
        """One row per image to generate: the Redux image embedding, or the (cached) text embedding."""
        if spec.kind == "redux":
            if self.redux is None:
                raise GenerationError("this worker has no Redux model (start it with --redux-model)")
            return self.redux.embed(image, spec.num_images)
        prompt_embeds, pooled = self.text_cache.get(spec.prompt, self.encode_text)
        return (prompt_embeds.repeat_interleave(spec.num_images, dim=0),
                pooled.repeat_interleave(spec.num_images, dim=0))  # fmt: skip

    def encode_text(self, prompt: str) -> tuple[Any, Any]:
        return encode_text(self.pipe, prompt, self.placement.device)
