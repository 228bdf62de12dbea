"""fal's input and output models for FLUX.1 [schnell]: the single source of truth for names, defaults, ranges
and descriptions. The OpenAPI document is generated from these."""

from __future__ import annotations

import enum
from typing import Annotated, Union

from pydantic import BaseModel, Discriminator, Field, Strict, Tag, field_validator

from fluxserve.core import sizing


class ImageSizePreset(str, enum.Enum):
    square_hd = "square_hd"
    square = "square"
    portrait_4_3 = "portrait_4_3"
    portrait_16_9 = "portrait_16_9"
    landscape_4_3 = "landscape_4_3"
    landscape_16_9 = "landscape_16_9"


# fal's inputs are strict: an integer field refuses "2", 2.0 and true, a boolean refuses "true" and 1, a
# number refuses "3.5" (an integer is still a number). Enums stay lax: FastAPI validates parsed JSON in Python
# mode, where a strict enum would refuse its own value.
StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
StrictFloat = Annotated[float, Strict()]


class ImageSize(BaseModel):
    """A custom size, as fal's ImageSize. FLUX rounds each side to a multiple of 16."""

    width: StrictInt = Field(default=512, gt=0, le=14142, description="The width of the generated image.")
    height: StrictInt = Field(default=512, gt=0, le=14142, description="The height of the generated image.")


class OutputFormat(str, enum.Enum):
    jpeg = "jpeg"
    png = "png"


class Acceleration(str, enum.Enum):
    none = "none"
    regular = "regular"
    high = "high"


def requested_size(image_size: ImageSize | ImageSizePreset) -> tuple[int, int]:
    if isinstance(image_size, ImageSize):
        return image_size.width, image_size.height
    return sizing.PRESETS[image_size.value]


# Each fal parameter is defined once and reused by every endpoint that takes it.
NumInferenceSteps = Annotated[
    StrictInt,
    Field(default=4, ge=1, le=12, description="The number of inference steps to perform."),
]
def _image_size_kind(value: object) -> str | None:
    """A string is a preset, an object a custom size: one clear error instead of one per union member."""
    if isinstance(value, (str, ImageSizePreset)):
        return "preset"
    if isinstance(value, (dict, ImageSize)):
        return "custom"
    return None


ImageSizeField = Annotated[
    Union[Annotated[ImageSize, Tag("custom")], Annotated[ImageSizePreset, Tag("preset")]],
    Discriminator(
        _image_size_kind,
        custom_error_type="image_size_type",
        custom_error_message="Input should be a preset name or an object with width and height",
    ),
    Field(default=ImageSizePreset.landscape_4_3, description="The size of the generated image."),
]
Seed = Annotated[
    Union[StrictInt, None],
    Field(
        default=None,
        ge=-(2**63),
        le=2**64 - 1,
        description="The same seed and the same prompt given to the same version of the model "
        "will output the same image every time.",
    ),
]
SyncMode = Annotated[
    StrictBool,
    Field(
        default=False,
        description="If `True`, the media will be returned as a data URI and the output data won't be "
        "available in the request history.",
    ),
]
NumImages = Annotated[
    StrictInt, Field(default=1, ge=1, le=4, description="The number of images to generate.")
]
EnableSafetyChecker = Annotated[
    StrictBool, Field(default=True, description="If set to true, the safety checker will be enabled.")
]
OutputFormatField = Annotated[
    OutputFormat, Field(default=OutputFormat.jpeg, description="The format of the generated image.")
]
AccelerationField = Annotated[
    Acceleration,
    Field(
        default=Acceleration.none,
        description="The speed of the generation. The higher the speed, the faster the generation.",
    ),
]


class SchnellInput(BaseModel):
    """Input of `fal-ai/flux/schnell`."""

    # The length cap is a setting (--max-prompt-length), so it is enforced at the edge (api/json_limits.py).
    prompt: str = Field(
        min_length=1,
        description="The prompt to generate an image from. Longer than the server's limit (5000 characters "
        "by default) is a 422; the model reads its first 77 CLIP and 256 T5 tokens.",
    )
    image_size: ImageSizeField
    num_inference_steps: NumInferenceSteps
    seed: Seed
    guidance_scale: StrictFloat = Field(
        default=3.5,
        ge=1,
        le=20,
        description="The CFG (Classifier Free Guidance) scale is a measure of how close you want the model to "
        "stick to your prompt when looking for a related image to show you.",
    )
    sync_mode: SyncMode
    num_images: NumImages
    enable_safety_checker: EnableSafetyChecker
    output_format: OutputFormatField
    acceleration: AccelerationField

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt must not be empty")
        return prompt


class ReduxInput(BaseModel):
    """Input of `fal-ai/flux/schnell/redux`."""

    image_url: str = Field(min_length=1, description="The URL of the image to generate an image from.")
    num_inference_steps: NumInferenceSteps
    image_size: ImageSizeField
    seed: Seed
    sync_mode: SyncMode
    num_images: NumImages
    enable_safety_checker: EnableSafetyChecker
    output_format: OutputFormatField
    acceleration: AccelerationField


class Image(BaseModel):
    url: str = Field(description="The URL where the image can be downloaded, or a data URI in sync mode.")
    content_type: str = Field(description="The mime type of the image.")
    width: int = Field(description="The width of the image in pixels.")
    height: int = Field(description="The height of the image in pixels.")


class Output(BaseModel):
    """Output of both FLUX.1 [schnell] endpoints."""

    images: list[Image] = Field(description="The generated image files info.")
    timings: dict[str, float] = Field(description="Seconds spent per stage; `inference` at least.")
    seed: int = Field(
        description="Seed of the generated Image. It will be the same value of the one passed in the input or "
        "the randomly generated that was used in case none was passed."
    )
    has_nsfw_concepts: list[bool] = Field(description="Whether the generated images contain NSFW concepts.")
    prompt: str = Field(description="The prompt used for generating the image.")
