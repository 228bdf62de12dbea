"""OpenAI's Images API on fluxserve's queue: `/v1/images/generations`, `/v1/images/variations` (Redux),
`/v1/models`; `/v1/images/edits` is refused (schnell cannot edit). The same keys (`Authorization: Bearer
<key id>:<secret>`), rate limits, admission caps, fairness, batching, safety checker and usage as fal's
routes: each request is one job of the fal app it maps to, waited for like the sync route (a hang-up cancels
it). Refusals are translated into OpenAI's error shape at the edge (api/openai_errors.py).
"""

# No `from __future__ import annotations`: FastAPI must see the real models in the signatures.

import base64
import dataclasses
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from fluxserve.api import admission, fal, job_calls
from fluxserve.api.auth import Caller, caller, submitter
from fluxserve.api.deps import Services, base_url, services
from fluxserve.api.endpoints import ENDPOINTS, capped_size, draw_seed
from fluxserve.api.openai_errors import error_body
from fluxserve.api.openai_schemas import (
    DEFAULT_SIZE,
    MODEL_ID,
    MODEL_OWNER,
    SIZE_PATTERN,
    ErrorResponse,
    ImageFormat,
    ImageGenerationRequest,
    ImagesResponse,
    Model,
    ModelList,
    ResponseFormat,
)
from fluxserve.api.routes.run import wait_for_end
from fluxserve.api.schemas import SchnellInput
from fluxserve.blobs.content_types import image_type
from fluxserve.core.errors import InputError
from fluxserve.core.jobs import GenerationSpec, Job
from fluxserve.store.protocols import Admission, QueueFull

TEXT_APP, REDUX_APP = "fal-ai/flux/schnell", "fal-ai/flux/schnell/redux"
# fal's guidance default for schnell (it ignores guidance; the value only travels in the spec).
GUIDANCE = SchnellInput.model_fields["guidance_scale"].default
# Unix time the model entry says it was created: FLUX.1 [schnell]'s release, 2024-08-01.
MODEL_CREATED = 1722470400
REFUSED_WHEN = (
    (400, "Invalid request: `param` names the field"),
    (401, "Missing or invalid key"),
    (404, "No such model"),
    (429, "Rate limited or the queue is full"),
    (500, "The generation failed"),
)
REFUSED = {code: {"model": ErrorResponse, "description": text} for code, text in REFUSED_WHEN}


def check_model(model: Optional[str]) -> None:
    if model is not None and model != MODEL_ID:
        served = f"it serves `{MODEL_ID}` (GET /v1/models)"
        message = f"The model `{model}` does not exist on this server; {served}"
        raise InputError("model", message, kind="model_not_found")


def parse_size(size: Optional[str], max_pixels: int) -> tuple[int, int]:
    """WIDTHxHEIGHT (or auto) -> the size FLUX draws (multiples of 16), under the server's pixel cap."""
    text = DEFAULT_SIZE if size in (None, "auto") else size
    width, height = (int(part) for part in text.split("x"))
    return capped_size(width, height, max_pixels, field="size")


def new_spec(svc: Services, request: Request, **fields: object) -> GenerationSpec:
    base = base_url(request, svc)
    retention = svc.api.output_retention_s or None  # 0: kept until deleted, as fal's routes keep them
    spec = GenerationSpec(base_url=base, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(spec, output_ttl_s=retention)


async def run_job(svc: Services, request: Request, who: Caller, app_id: str, spec: GenerationSpec
                  ) -> Job | JSONResponse:  # fmt: skip
    admit = Admission(max_queued=svc.admission.max_queue_length,
                      max_queued_per_key=svc.admission.max_queued_per_key)  # fmt: skip
    try:
        job = await job_calls.submit(svc, job_calls.new_job(app_id, spec, key_id=who.key_id), admit)
    except QueueFull as exc:
        return admission.refusal(exc, svc)
    return await wait_for_end(request, svc, job)


def images_response(job: Job, response_format: ResponseFormat, extra: dict) -> JSONResponse:
    """The ended job as OpenAI's ImagesResponse; a failed one as its error, a flagged one as OpenAI's
    content-policy refusal (the safety checker blacked the image out: there is nothing to show)."""
    if job.error_or_cancel is not None or job.output is None:
        return fal.result_response(job)  # translated at the edge
    output = job.output
    flagged = sum(bool(flag) for flag in output.get("has_nsfw_concepts", []))
    if flagged:
        message = (f"{flagged} of {len(output['images'])} images were flagged by the safety checker; "
                   "nothing is returned (rephrase the prompt)")  # fmt: skip
        return JSONResponse(error_body(message, 400, None, "content_policy_violation"), status_code=400)
    data = []
    for image in output["images"]:
        if response_format is ResponseFormat.b64_json:
            data.append({"b64_json": image["url"].split(",", 1)[1]})  # sync_mode: a data: URI
        else:
            data.append({"url": image["url"], "revised_prompt": output.get("prompt") or None})
    first = output["images"][0]
    body = ImagesResponse(created=int(job.created_at), data=data, size=f"{first['width']}x{first['height']}",
                          seed=output["seed"], **extra)  # fmt: skip
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), headers={fal.REQUEST_ID_HEADER: job.id}
    )


async def generations(body: ImageGenerationRequest, request: Request, svc: Services = Depends(services),
                      who: Caller = Depends(submitter)):  # fmt: skip
    check_model(body.model)
    width, height = parse_size(body.size, svc.api.max_pixels)
    output_format = body.output_format or ImageFormat.png
    response_format = body.response_format or ResponseFormat.url
    spec = new_spec(
        svc, request, kind="text", prompt=body.prompt, width=width, height=height,
        num_inference_steps=body.steps(), seed=draw_seed() if body.seed is None else body.seed,
        num_images=body.n or 1, guidance_scale=GUIDANCE, enable_safety_checker=body.enable_safety_checker,
        output_format=output_format.value, sync_mode=response_format is ResponseFormat.b64_json,
        acceleration=body.acceleration.value, output_quality=body.output_compression,
    )  # fmt: skip
    done = await run_job(svc, request, who, TEXT_APP, spec)
    if isinstance(done, JSONResponse):
        return done
    extra = {"output_format": output_format, "quality": body.quality, "background": body.background}
    response = images_response(done, response_format, extra)
    await job_calls.forget_if_handed_out_once(svc, done)
    return response


async def variations(
    request: Request,
    image: UploadFile = File(
        description="The image to vary (PNG, JPEG, WebP or GIF; the server's upload cap)."
    ),
    model: Optional[str] = Form(default=None),
    n: int = Form(default=1, ge=1, le=4),
    size: str = Form(default=DEFAULT_SIZE, pattern=SIZE_PATTERN),
    response_format: ResponseFormat = Form(default=ResponseFormat.url),
    user: Optional[str] = Form(default=None, max_length=256),
    svc: Services = Depends(services),
    who: Caller = Depends(submitter),
):
    """Redux: variations of the uploaded image, as fal-ai/flux/schnell/redux draws them."""
    redux = next(e for e in ENDPOINTS if e.app_id == REDUX_APP)
    redux.ensure_available(svc.api)
    check_model(model)
    width, height = parse_size(size, svc.api.max_pixels)
    data = await image.read()  # the body is capped at the upload limit before it is read (body_limits)
    content_type = image_type(data)
    if content_type is None:
        raise InputError("image", "is not a PNG, JPEG, WebP or GIF image", kind="invalid_image")
    image_url = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    spec = new_spec(
        svc, request, kind="redux", prompt="", width=width, height=height, num_inference_steps=4,
        seed=draw_seed(), num_images=n, guidance_scale=GUIDANCE, enable_safety_checker=True,
        output_format="png", sync_mode=response_format is ResponseFormat.b64_json, acceleration="none",
        image_url=image_url,
    )  # fmt: skip
    done = await run_job(svc, request, who, REDUX_APP, spec)
    if isinstance(done, JSONResponse):
        return done
    response = images_response(done, response_format, {"output_format": ImageFormat.png})
    await job_calls.forget_if_handed_out_once(svc, done)
    return response


async def edits(who: Caller = Depends(caller)):
    message = (
        "Image edits are not supported: FLUX.1 [schnell] generates from text, and Redux varies an image "
        "without a prompt or mask. Use /v1/images/generations or /v1/images/variations"
    )
    return JSONResponse(error_body(message, 400, None, "unsupported_operation"), status_code=400)


def models_list() -> ModelList:
    return ModelList(data=[Model(id=MODEL_ID, created=MODEL_CREATED, owned_by=MODEL_OWNER)])


async def list_models(who: Caller = Depends(caller)) -> ModelList:
    return models_list()


async def get_model(model_id: str, who: Caller = Depends(caller)) -> Model:
    check_model(model_id)
    return models_list().data[0]


def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["openai"], responses=REFUSED)  # type: ignore[arg-type]
    routes = (
        ("/images/generations", generations, "POST", ImagesResponse, "generate", "openai_images_generations"),
        ("/images/variations", variations, "POST", ImagesResponse, "variations", "openai_images_variations"),
        ("/images/edits", edits, "POST", ErrorResponse, "edits (not supported)", "openai_images_edits"),
        ("/models", list_models, "GET", ModelList, "the models", "openai_models"),
        ("/models/{model_id:path}", get_model, "GET", Model, "one model", "openai_model"),
    )
    for path, handler, method, model, summary, operation_id in routes:
        r.add_api_route(path, handler, methods=[method], response_model=model, summary=f"OpenAI: {summary}",
                        operation_id=operation_id)  # fmt: skip
    return r
