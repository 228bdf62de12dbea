"""FluxEngine: a loaded FLUX.1 [schnell] pipeline (+ safety checker) that turns a GenerationSpec into images."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fluxserve.config import EngineSettings
from fluxserve.engine import seeds
from fluxserve.engine.accel import Accelerator, AccelSettings
from fluxserve.engine.cache import EmbeddingCache
from fluxserve.engine.checkpoints import load_transformer
from fluxserve.engine.loading import Placement, load_flux_pipeline, require_model, resolve_placement
from fluxserve.engine.redux import ReduxPrior
from fluxserve.engine.safety import SafetyChecker
from fluxserve.errors import GenerationError
from fluxserve.jobs import GenerationSpec

log = logging.getLogger(__name__)

# FLUX.1 [schnell] was distilled with 256 T5 tokens; longer prompts are truncated, as on fal.
MAX_SEQUENCE_LENGTH = 256


class Progress(Protocol):
    """What the engine reports while it works. Either method may raise JobCancelled to stop the job."""

    def stage(self, name: str) -> None: ...

    def step(self, step: int, total: int) -> None: ...


class NoProgress:
    def stage(self, name: str) -> None:
        return None

    def step(self, step: int, total: int) -> None:
        return None


@dataclass
class Generated:
    images: list[Any]  # PIL images, safety-checked
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=dict)


class StageTimer:
    """Reports each stage as it starts and records how long each took."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.progress.stage(name)
        started = time.perf_counter()
        yield
        self.timings[name.replace(" ", "_")] = time.perf_counter() - started


def fit_small_gpu(pipe: Any, placement: Placement) -> None:
    """--memory low: the transformer in fp8 (half its bf16 size) for every level, and the text encoders, VAE and
    transformer moved to the GPU only while they run (diffusers' model offload). 1024x1024 then fits 24 GB."""
    if placement.device != "cuda":
        log.info("memory mode low: needs a CUDA GPU; ignored on %s", placement.device)
        return
    import importlib.util

    if importlib.util.find_spec("torchao") is not None:
        from torchao.quantization import Float8WeightOnlyConfig, quantize_

        quantize_(pipe.transformer, Float8WeightOnlyConfig())
    else:
        log.warning("memory mode low: torchao is missing, the transformer stays in %s", placement.dtype_name)
    pipe.enable_model_cpu_offload()


def split(items: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, at = [], 0
    for size in sizes:
        out.append(items[at : at + size])
        at += size
    return out


@dataclass
class FluxEngine:
    pipe: Any
    safety: SafetyChecker | None
    placement: Placement
    redux: ReduxPrior | None = None
    text_cache: EmbeddingCache = field(default_factory=EmbeddingCache)
    accel: Accelerator = field(default_factory=Accelerator)
    shapes_seen: set[tuple[int, int, str, int]] = field(default_factory=set)

    @classmethod
    def load(cls, settings: EngineSettings) -> FluxEngine:
        root = require_model(settings)  # before importing torch: a bad folder or file fails in a second
        placement = resolve_placement(settings.device, settings.dtype)
        components = {}
        if settings.model_path.is_file():
            components["transformer"] = load_transformer(settings.model_path, root, placement)
        pipe = load_flux_pipeline(root, placement, **components)
        if settings.memory == "low":
            fit_small_gpu(pipe, placement)
        safety = None
        if not settings.safety_disabled:
            safety = SafetyChecker.load(settings.safety_checker_path or root, placement)
        else:
            log.warning("safety checker disabled by the operator: has_nsfw_concepts is always false")
        redux = ReduxPrior.load(settings.redux_model_path, placement) if settings.redux_model_path else None
        engine = cls(pipe=pipe, safety=safety, placement=placement, redux=redux,
                     text_cache=EmbeddingCache(settings.text_cache_size))  # fmt: skip
        accel = AccelSettings(disabled=settings.accel_disabled, compile=settings.compile, fp8=settings.fp8)
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
        timer = StageTimer(progress or NoProgress())
        with torch.inference_mode(), self.accel.level(first.acceleration, self):
            with timer.stage("text encode" if first.kind == "text" else "image encode"):
                parts = [self.conditioning(s, img) for s, img in zip(specs, images or [None] * len(specs))]
                prompt_embeds = torch.cat([p[0] for p in parts])
                pooled = torch.cat([p[1] for p in parts])
            with timer.stage("denoise"):
                seeds_all = [seed for s in specs for seed in s.image_seeds]
                latents = self.denoise(first, prompt_embeds, pooled, seeds_all, timer.progress)
            with timer.stage("decode"):
                decoded = self.decode(latents, first.height, first.width)
        per_job = split(decoded, [s.num_images for s in specs])
        checked = [(imgs, [False] * len(imgs)) for imgs in per_job]
        if self.safety is not None and any(s.enable_safety_checker for s in specs):
            with timer.stage("safety"):
                checked = self.check_safety(specs, per_job)
        timings = {"inference": sum(timer.timings.values()), **timer.timings}
        return [Generated(images=imgs, has_nsfw_concepts=flags, timings=dict(timings)) for imgs, flags in checked]

    def gpu_memory_bytes(self) -> float | None:
        if self.placement.device != "cuda":
            return None
        import torch

        return float(torch.cuda.max_memory_allocated())

    def warm_up(self, shapes: tuple[tuple[int, int, str, int], ...]) -> None:
        """Run each (width, height, level, batch) once, so compiled kernels exist before the first request."""
        for width, height, level, batch in shapes:
            started = time.perf_counter()
            spec = GenerationSpec(kind="text", prompt="warm-up", width=width, height=height, num_inference_steps=1,
                                  seed=0, num_images=1, guidance_scale=3.5, enable_safety_checker=True,
                                  output_format="png", sync_mode=False, acceleration=level, base_url="")  # fmt: skip
            self.generate_batch([spec] * batch)
            log.info("warm-up %dx%d at %s, batch %d: %.2f s", width, height, level, batch, time.perf_counter() - started)

    def note_shape(self, specs: list[GenerationSpec]) -> None:
        """Compiled levels compile once per new shape; say so, so a slow first request is explained in the log."""
        first = specs[0]
        shape = (first.width, first.height, first.acceleration, sum(s.num_images for s in specs))
        if shape not in self.shapes_seen:
            self.shapes_seen.add(shape)
            if "compile" in self.accel.applied(first.acceleration):
                log.info("new shape %dx%d at %s, %d images: compiling it once", *shape)

    def check_safety(self, specs: list[GenerationSpec], per_job: list[list[Any]]) -> list[tuple[list, list]]:
        """One checker call over the images of every job that asked for it."""
        wanted = [img for spec, imgs in zip(specs, per_job) if spec.enable_safety_checker for img in imgs]
        checked, flags = self.safety.check(wanted)  # type: ignore[union-attr]
        results, at = [], 0
        for spec, imgs in zip(specs, per_job):
            if spec.enable_safety_checker:
                results.append((checked[at : at + len(imgs)], flags[at : at + len(imgs)]))
                at += len(imgs)
            else:
                results.append((imgs, [False] * len(imgs)))
        return results

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
        # Always one prompt at a time: the embedding of a prompt never depends on what it was batched with.
        prompt_embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=self.placement.device, num_images_per_prompt=1,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )  # fmt: skip
        return prompt_embeds, pooled

    def denoise(self, spec: GenerationSpec, prompt_embeds: Any, pooled: Any, image_seeds: list[int],
                progress: Progress) -> Any:  # fmt: skip
        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            progress.step(step + 1, spec.num_inference_steps)  # may raise JobCancelled: stops between steps
            return kwargs

        return self.pipe(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled,
            width=spec.width,
            height=spec.height,
            num_inference_steps=spec.num_inference_steps,
            # schnell has no guidance embedding: diffusers ignores this, as fal does. Passed for parity.
            guidance_scale=spec.guidance_scale,
            generator=seeds.generators(image_seeds),
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            output_type="latent",
            callback_on_step_end=step_end,
        ).images

    def decode(self, latents: Any, height: int, width: int) -> list[Any]:
        """Packed latents -> PIL images, exactly as FluxPipeline does after its last step."""
        pipe = self.pipe
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        decoded = pipe.vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")
