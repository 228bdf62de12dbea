"""The registry of fal apps fluxserve serves: app id -> input model and how its input becomes a job."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

from fluxserve import sizing
from fluxserve.api.schemas import SchnellInput, requested_size
from fluxserve.errors import InputError
from fluxserve.jobs import GenerationSpec

# Random seeds are drawn below 2**32, the range of the seeds in fal's own responses.
RANDOM_SEED_BOUND = 2**32


def draw_seed() -> int:
    return secrets.randbelow(RANDOM_SEED_BOUND)


def resolve_size(image_size: object, max_pixels: int) -> tuple[int, int]:
    width, height = sizing.resolve(*requested_size(image_size))  # type: ignore[arg-type]
    if width * height > max_pixels:
        raise InputError(
            "image_size",
            f"{width}x{height} is {width * height} pixels; this server allows at most {max_pixels} per image",
        )
    return width, height


def text_to_spec(body: SchnellInput, base_url: str, max_pixels: int) -> GenerationSpec:
    width, height = resolve_size(body.image_size, max_pixels)
    return GenerationSpec(
        kind="text",
        prompt=body.prompt,
        width=width,
        height=height,
        num_inference_steps=body.num_inference_steps,
        seed=draw_seed() if body.seed is None else body.seed,
        num_images=body.num_images,
        guidance_scale=body.guidance_scale,
        enable_safety_checker=body.enable_safety_checker,
        output_format=body.output_format.value,
        sync_mode=body.sync_mode,
        acceleration=body.acceleration.value,
        base_url=base_url,
    )


@dataclass(frozen=True)
class Endpoint:
    app_id: str  # e.g. "fal-ai/flux/schnell"
    input_model: type[BaseModel]
    to_spec: Callable[..., GenerationSpec]
    summary: str


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        app_id="fal-ai/flux/schnell",
        input_model=SchnellInput,
        to_spec=text_to_spec,
        summary="FLUX.1 [schnell]: text to image",
    ),
)
