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


@dataclass
class FluxEngine:
    pipe: Any
    safety: SafetyChecker | None
    placement: Placement
    redux: ReduxPrior | None = None

    @classmethod
    def load(cls, settings: EngineSettings) -> FluxEngine:
        root = require_model(settings)  # before importing torch: a bad folder or file fails in a second
        placement = resolve_placement(settings.device, settings.dtype)
        components = {}
        if settings.model_path.is_file():
            components["transformer"] = load_transformer(settings.model_path, root, placement)
        pipe = load_flux_pipeline(root, placement, **components)
        safety = None
        if not settings.safety_disabled:
            safety = SafetyChecker.load(settings.safety_checker_path or root, placement)
        else:
            log.warning("safety checker disabled by the operator: has_nsfw_concepts is always false")
        redux = ReduxPrior.load(settings.redux_model_path, placement) if settings.redux_model_path else None
        return cls(pipe=pipe, safety=safety, placement=placement, redux=redux)

    def generate(self, spec: GenerationSpec, progress: Progress | None = None, image: Any = None) -> Generated:
        """Encode (text, or the Redux image), denoise (all num_images in one batch, one generator per image),
        decode, safety."""
        import torch

        timer = StageTimer(progress or NoProgress())
        with torch.inference_mode():
            with timer.stage("text encode" if spec.kind == "text" else "image encode"):
                prompt_embeds, pooled = self.conditioning(spec, image)
            with timer.stage("denoise"):
                latents = self.denoise(spec, prompt_embeds, pooled, timer.progress)
            with timer.stage("decode"):
                images = self.decode(latents, spec.height, spec.width)
        flags = [False] * len(images)
        if spec.enable_safety_checker and self.safety is not None:
            with timer.stage("safety"):
                images, flags = self.safety.check(images)
        timings = {"inference": sum(timer.timings.values()), **timer.timings}
        return Generated(images=images, has_nsfw_concepts=flags, timings=timings)

    def conditioning(self, spec: GenerationSpec, image: Any) -> tuple[Any, Any]:
        if spec.kind == "redux":
            if self.redux is None:
                raise GenerationError("this worker has no Redux model (start it with --redux-model)")
            return self.redux.embed(image, spec.num_images)
        prompt_embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=spec.prompt, prompt_2=None, device=self.placement.device,
            num_images_per_prompt=spec.num_images, max_sequence_length=MAX_SEQUENCE_LENGTH,
        )  # fmt: skip
        return prompt_embeds, pooled

    def denoise(self, spec: GenerationSpec, prompt_embeds: Any, pooled: Any, progress: Progress) -> Any:
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
            generator=seeds.generators(spec.image_seeds),
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
