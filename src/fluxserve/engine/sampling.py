"""One engine call's steps as free functions over a diffusers FluxPipeline, as in BFL's src/flux/sampling.py:
the noise's generators, the text conditioning, the denoising loop, the decode, and splitting a batch's rows
back into its jobs. FluxEngine.generate_batch (engine/flux.py) composes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxserve.core.jobs import GenerationSpec
from fluxserve.engine import prompts
from fluxserve.engine.protocol import Progress

# FLUX.1 [schnell] was distilled with 256 T5 tokens; longer prompts are truncated, as on fal.
MAX_SEQUENCE_LENGTH = 256


def generators(seeds: list[int]) -> list[Any]:
    """One generator per image: image k of a batch is the image a single request with seed + k would give."""
    import torch

    # CPU generators: the initial noise is then the same on every device, so a seed reproduces anywhere.
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def encode_text(pipe: Any, prompt: str, device: str) -> tuple[Any, Any]:
    """(T5 embeddings, pooled CLIP embedding) of one prompt."""
    # Always one prompt at a time: the embedding of a prompt never depends on what it was batched with.
    # Each tokenizer gets only the prefix its encoder reads (engine/prompts.py): same tokens, less work.
    prompt_embeds, pooled, _ = pipe.encode_prompt(
        prompt=prompts.bounded(prompt, pipe.tokenizer, pipe.tokenizer_max_length),
        prompt_2=prompts.bounded(prompt, pipe.tokenizer_2, MAX_SEQUENCE_LENGTH),
        device=device, num_images_per_prompt=1, max_sequence_length=MAX_SEQUENCE_LENGTH,
    )  # fmt: skip
    return prompt_embeds, pooled


def denoise(pipe: Any, spec: GenerationSpec, prompt_embeds: Any, pooled: Any, image_seeds: list[int],
            progress: Progress, preview: Callable[[Any], list[str]] | None = None) -> Any:  # fmt: skip
    """The packed latents after spec.num_inference_steps steps; progress hears of each step, with `preview`
    of the step's latents when given."""

    def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        previews = preview(kwargs["latents"]) if preview is not None else None
        progress.step(step + 1, spec.num_inference_steps, previews)  # may raise JobCancelled: stops here
        return kwargs

    return pipe(
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled,
        width=spec.width,
        height=spec.height,
        num_inference_steps=spec.num_inference_steps,
        # schnell has no guidance embedding: diffusers ignores this, as fal does. Passed for parity.
        guidance_scale=spec.guidance_scale,
        generator=generators(image_seeds),
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        output_type="latent",
        callback_on_step_end=step_end,
        callback_on_step_end_tensor_inputs=["latents"],
    ).images


def decode(pipe: Any, latents: Any, height: int, width: int) -> Any:
    """Packed latents -> decoded images in [-1, 1], (N, 3, H, W) on the device, as FluxPipeline decodes."""
    # diffusers keeps the unpacking private to the pipeline; this is its own call, on its own latents layout.
    latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    return pipe.vae.decode(latents, return_dict=False)[0]


def split(items: list[Any], sizes: list[int]) -> list[list[Any]]:
    """A batch's rows back into its jobs' shares, `sizes` rows each, in order."""
    out, at = [], 0
    for size in sizes:
        out.append(items[at : at + size])
        at += size
    return out
