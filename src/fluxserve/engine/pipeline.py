"""FluxEngine: a loaded FLUX.1 [schnell] pipeline (+ safety checker) that turns a GenerationSpec into images."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fluxserve.config import EngineSettings
from fluxserve.engine import seeds
from fluxserve.engine.loading import Placement, load_flux_pipeline, require_model_dir, resolve_placement
from fluxserve.engine.safety import SafetyChecker
from fluxserve.jobs import GenerationSpec

log = logging.getLogger(__name__)

# FLUX.1 [schnell] was distilled with 256 T5 tokens; longer prompts are truncated, as on fal.
MAX_SEQUENCE_LENGTH = 256

# Called after each denoising step with (step, total).
StepCallback = Callable[[int, int], None]


@dataclass
class Generated:
    images: list[Any]  # PIL images, safety-checked
    has_nsfw_concepts: list[bool]
    timings: dict[str, float] = field(default_factory=dict)


def _noop(*_: Any) -> None:
    return None


@dataclass
class FluxEngine:
    pipe: Any
    safety: SafetyChecker | None
    placement: Placement

    @classmethod
    def load(cls, settings: EngineSettings) -> FluxEngine:
        require_model_dir(settings.model_path)  # before importing torch: a bad folder fails in a second
        placement = resolve_placement(settings.device, settings.dtype)
        pipe = load_flux_pipeline(settings.model_path, placement)
        safety = None
        if not settings.safety_disabled:
            safety = SafetyChecker.load(settings.safety_checker_path or settings.model_path, placement)
        else:
            log.warning("safety checker disabled by the operator: has_nsfw_concepts is always false")
        return cls(pipe=pipe, safety=safety, placement=placement)

    def generate(self, spec: GenerationSpec, on_step: StepCallback = _noop) -> Generated:
        """All num_images in one batched pipeline call, one generator per image."""
        import torch

        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, spec.num_inference_steps)
            return kwargs

        started = time.perf_counter()
        with torch.inference_mode():
            result = self.pipe(
                prompt=spec.prompt,
                width=spec.width,
                height=spec.height,
                num_inference_steps=spec.num_inference_steps,
                # schnell has no guidance embedding: diffusers ignores this, as fal does. Passed for parity.
                guidance_scale=spec.guidance_scale,
                num_images_per_prompt=spec.num_images,
                generator=seeds.generators(spec.image_seeds),
                max_sequence_length=MAX_SEQUENCE_LENGTH,
                output_type="pil",
                callback_on_step_end=step_end,
            )
        images = list(result.images)
        inference = time.perf_counter() - started
        flags = [False] * len(images)
        if spec.enable_safety_checker and self.safety is not None:
            images, flags = self.safety.check(images)
        timings = {"inference": inference, "safety": time.perf_counter() - started - inference}
        return Generated(images=images, has_nsfw_concepts=flags, timings=timings)
