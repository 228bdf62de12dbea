"""OpenAI's Images API, as the `openai` SDKs send it: the request and response models of /v1/images/* and
/v1/models. What FLUX.1 [schnell] cannot do is refused by name (400), never silently ignored; fal's own
parameter names are accepted as extensions (`seed`, `num_inference_steps`, `acceleration`,
`enable_safety_checker`), with fal's ranges and defaults (api/schemas.py, the one source of them)."""

from __future__ import annotations

import enum
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from fluxserve.api.schemas import AccelerationField, EnableSafetyChecker, Seed

# The id /v1/models lists and `model` must name (None or absent: this one). The fal app it runs as.
MODEL_ID = "fal-ai/flux/schnell"
MODEL_OWNER = "black-forest-labs"
# OpenAI's default size for generations and variations.
DEFAULT_SIZE = "1024x1024"
SIZE_PATTERN = r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$"


class ResponseFormat(str, enum.Enum):
    url = "url"
    b64_json = "b64_json"


class ImageFormat(str, enum.Enum):
    png = "png"
    jpeg = "jpeg"
    webp = "webp"


class Quality(str, enum.Enum):
    """Every quality the SDK sends. `low` runs 2 steps; every other value schnell's 4 (its best: more
    steps than 4 is not what it was distilled for). An explicit num_inference_steps wins."""

    low = "low"
    medium = "medium"
    high = "high"
    xhigh = "xhigh"
    max = "max"
    auto = "auto"
    standard = "standard"
    hd = "hd"


QUALITY_STEPS = {Quality.low: 2}
DEFAULT_STEPS = 4

SizeField = Optional[str]


class ImageGenerationRequest(BaseModel):
    """`POST /v1/images/generations`. Unknown fields are refused (400 naming them), as OpenAI does."""

    model_config = ConfigDict(extra="forbid")

    # The length cap is the server's --max-prompt-length, enforced at the edge (api/body_limits.py).
    prompt: StrictStr = Field(min_length=1, description="What to draw.")
    model: Optional[StrictStr] = Field(default=None, description=f"`{MODEL_ID}` (GET /v1/models), or absent.")
    n: Optional[StrictInt] = Field(default=1, ge=1, le=4, description="Images to generate, 1 to 4.")
    size: SizeField = Field(
        default=DEFAULT_SIZE,
        pattern=SIZE_PATTERN,
        description="WIDTHxHEIGHT, each rounded to a multiple of 16 (what FLUX draws; the response's `size` "
        "says what was drawn), or auto (1024x1024). The server's pixel cap applies.",
    )
    response_format: Optional[ResponseFormat] = Field(
        default=ResponseFormat.url, description="url (a link to the stored image) or b64_json (the bytes)."
    )
    output_format: Optional[ImageFormat] = Field(default=ImageFormat.png, description="png, jpeg or webp.")
    output_compression: Optional[StrictInt] = Field(
        default=None, ge=0, le=100, description="jpeg and webp quality, 0-100 (default 95)."
    )
    quality: Optional[Quality] = Field(
        default=None, description="low: 2 steps; any other value: 4 (schnell's best)."
    )
    style: Optional[Literal["vivid", "natural"]] = Field(
        default=None, description="Accepted, no effect: FLUX has no style switch; say it in the prompt."
    )
    background: Optional[Literal["auto", "opaque"]] = Field(
        default=None, description="auto or opaque (FLUX draws no transparency: `transparent` is refused)."
    )
    moderation: Optional[Literal["auto", "low"]] = Field(
        default=None, description="Accepted, no effect: enable_safety_checker decides."
    )
    # Strict types: a lax Literal[False] takes 0 and Literal[0] takes false (they compare equal).
    stream: Optional[StrictBool] = Field(
        default=None, description="false only: partial images are not streamed here (fal's /stream does)."
    )
    partial_images: Optional[StrictInt] = Field(default=None, ge=0, le=0, description="0 only (see stream).")
    user: Optional[StrictStr] = Field(default=None, max_length=256, description="Accepted, not stored.")
    safety_identifier: Optional[StrictStr] = Field(default=None, max_length=256,
                                                   description="Accepted, not stored.")  # fmt: skip
    # fal's parameters, under fal's names, for control OpenAI's API does not give.
    seed: Seed
    num_inference_steps: Optional[StrictInt] = Field(
        default=None, ge=1, le=12, description="Overrides `quality` (fal's num_inference_steps)."
    )
    acceleration: AccelerationField
    enable_safety_checker: EnableSafetyChecker

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt must not be empty")
        return prompt

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("streaming is not supported here: send false, or use fal's /stream route")
        return stream

    def steps(self) -> int:
        if self.num_inference_steps is not None:
            return self.num_inference_steps
        return QUALITY_STEPS.get(self.quality, DEFAULT_STEPS) if self.quality else DEFAULT_STEPS


class ImageData(BaseModel):
    url: Optional[str] = Field(default=None, description="With response_format=url.")
    b64_json: Optional[str] = Field(default=None, description="With response_format=b64_json.")
    revised_prompt: Optional[str] = Field(default=None, description="The prompt as drawn (never rewritten).")


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix seconds when the request was made.")
    data: list[ImageData]
    output_format: ImageFormat
    size: str = Field(description="WIDTHxHEIGHT as drawn (rounded to multiples of 16).")
    quality: Optional[Quality] = None
    background: Optional[str] = None
    # fal's extensions: the seed that reproduces the images.
    seed: int


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    """Every refusal on /v1, in OpenAI's shape (the SDKs raise their typed errors from it)."""

    error: ErrorBody
