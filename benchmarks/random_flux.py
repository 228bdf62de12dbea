"""FLUX.1 [schnell] at full size with random weights, built directly on the GPU in bf16: the real shapes of the
12B transformer, T5-XXL, CLIP-L, the VAE and the safety checker's CLIP ViT-L/14, with no download. Random weights
time the same as real ones (images are noise)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def building_on(device: str, dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def full_size_pipeline(device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(FluxPipeline, safety checker, feature extractor) at full size."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        T5Config,
        T5EncoderModel,
    )

    from fluxserve.engine.tiny import clip_tokenizer, t5_tokenizer

    with building_on(device, dtype):
        transformer = FluxTransformer2DModel(guidance_embeds=False)  # the defaults are FLUX.1's dims
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                    num_hidden_layers=12, num_attention_heads=12,
                                                    projection_dim=768))  # fmt: skip
        text_encoder_2 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_layers=24,
                                                 num_heads=64, feed_forward_proj="gated-gelu",
                                                 is_encoder_decoder=False, use_cache=False))  # fmt: skip
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                            layers_per_block=2, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                            scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
        checker = StableDiffusionSafetyChecker(CLIPConfig(
            text_config=dict(hidden_size=768, num_hidden_layers=1),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, patch_size=14, image_size=224),
            projection_dim=768))  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)  # fmt: skip
    pipe = FluxPipeline(scheduler=scheduler, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
                        text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer(), transformer=transformer, vae=vae,
                        image_encoder=None, feature_extractor=None)  # fmt: skip
    extractor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return pipe, checker.eval(), extractor
