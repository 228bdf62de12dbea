"""The registry of fal apps fluxserve serves: app id -> input model and how its input becomes a job."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

from fluxserve.api.schemas import ReduxInput, SchnellInput, requested_size
from fluxserve.core import sizing
from fluxserve.core.errors import InputError, Unavailable
from fluxserve.core.jobs import GenerationSpec
from fluxserve.core.settings import ApiSettings
from fluxserve.net.image_inputs import ImageInputError, check_image_url

# Random seeds are drawn below 2**32, the range of the seeds in fal's own responses.
RANDOM_SEED_BOUND = 2**32


def draw_seed() -> int:
    return secrets.randbelow(RANDOM_SEED_BOUND)


def resolve_size(image_size: object, max_pixels: int) -> tuple[int, int]:
    return capped_size(*requested_size(image_size), max_pixels)  # type: ignore[arg-type]


def capped_size(width: int, height: int, max_pixels: int, field: str = "image_size") -> tuple[int, int]:
    """The size FLUX draws for a requested one, refused (naming `field`) over the server's pixel cap."""
    width, height = sizing.resolve(width, height)
    if width * height > max_pixels:
        raise InputError(
            field, f"{width}x{height} is {width * height} pixels; this server allows at most {max_pixels} per image"
        )
    return width, height


def common_fields(body: SchnellInput | ReduxInput, base_url: str, max_pixels: int) -> dict[str, object]:
    """The parameters both endpoints share, resolved: size rounded and capped, seed drawn."""
    width, height = resolve_size(body.image_size, max_pixels)
    return dict(
        width=width,
        height=height,
        num_inference_steps=body.num_inference_steps,
        seed=draw_seed() if body.seed is None else body.seed,
        num_images=body.num_images,
        enable_safety_checker=body.enable_safety_checker,
        output_format=body.output_format.value,
        sync_mode=body.sync_mode,
        acceleration=body.acceleration.value,
        base_url=base_url,
    )


def text_to_spec(body: SchnellInput, base_url: str, max_pixels: int) -> GenerationSpec:
    return GenerationSpec(
        kind="text",
        prompt=body.prompt,
        guidance_scale=body.guidance_scale,
        **common_fields(body, base_url, max_pixels),  # type: ignore[arg-type]
    )


def redux_to_spec(body: ReduxInput, base_url: str, max_pixels: int) -> GenerationSpec:
    try:
        check_image_url(body.image_url)  # syntax only: addresses are checked when the worker fetches it
    except ImageInputError as exc:
        raise InputError("image_url", f"image_url {exc}", kind="image_url_invalid") from None
    return GenerationSpec(
        kind="redux",
        prompt="",  # Redux has no prompt; fal answers an empty one
        guidance_scale=3.5,
        image_url=body.image_url,
        **common_fields(body, base_url, max_pixels),  # type: ignore[arg-type]
    )


def operation_id(verb: str, path: str) -> str:
    """An OpenAPI operation id from a verb and an app id or path: submit + fal-ai/flux/schnell ->
    submit_fal_ai_flux_schnell (one rule for every route, so ids never collide by spelling)."""
    return f"{verb}_{path.replace('/', '_').replace('-', '_')}"


@dataclass(frozen=True)
class Endpoint:
    app_id: str  # e.g. "fal-ai/flux/schnell"
    input_model: type[BaseModel]
    to_spec: Callable[..., GenerationSpec]
    summary: str
    needs_redux: bool = False

    def ensure_available(self, api: ApiSettings) -> None:
        if self.needs_redux and not api.redux_enabled:
            raise Unavailable(
                "This server has no Redux model: start it with --redux-model PATH (a FLUX.1-Redux-dev folder)",
                error_type="redux_not_configured",
            )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        app_id="fal-ai/flux/schnell",
        input_model=SchnellInput,
        to_spec=text_to_spec,
        summary="FLUX.1 [schnell]: text to image",
    ),
    Endpoint(
        app_id="fal-ai/flux/schnell/redux",
        input_model=ReduxInput,
        to_spec=redux_to_spec,
        summary="FLUX.1 [schnell] Redux: variations of an image",
        needs_redux=True,
    ),
)
