"""Tiny, randomly initialised FLUX.1 [schnell] models in the standard diffusers layout.

They load through exactly the code path of the real 12B weights (FluxPipeline.from_pretrained on a folder),
so the demo server and the tests exercise real loading, sampling, safety checking and encoding. Their images
are noise. Built offline: the tokenizers are constructed from in-code vocabularies, and every constructor is
seeded, so a rebuild in a new process gives identical weights.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

# Small dims that keep FLUX's real structure: a 4-level VAE (8x downsampling, 16 latent channels) so the
# transformer sees as many image tokens as the real model does at the same size.
HIDDEN = 32
# The text dims stay those of the real model (T5-XXL 4096, CLIP-L 768): Redux without text encoders, as
# FLUX.1-Redux-dev is used, feeds the transformer zero text embeddings of exactly these sizes.
T5_DIM = 4096
CLIP_DIM = 768


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_tokenizer() -> Any:
    """Byte-level CLIP tokenizer with no merges: one token per character (514 tokens)."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> Any:
    """A small Unigram T5 tokenizer: a few words, then every printable character alone and word-initial."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0) for w in ("a", "photo", "of", "the", "cat", "dog", "in")]
    chars = [c for c in string.printable if not c.isspace()]
    vocab += [(c, -5.0) for c in chars] + [("▁" + c, -5.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def flux_components() -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_DIM,
        guidance_embeds=False, axes_dims_rope=[4, 4, 8],
    )  # fmt: skip
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CLIP_DIM, intermediate_size=37, projection_dim=HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False,
    ))  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=16, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=0.3611, shift_factor=0.1159,
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=False, base_image_seq_len=256, max_image_seq_len=4096,
        base_shift=0.5, max_shift=1.15,
    )  # fmt: skip
    return dict(
        scheduler=scheduler, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, transformer=transformer, vae=vae,
    )  # fmt: skip


def safety_components() -> tuple[Any, Any]:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=4, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=4),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, extractor


def build_tiny_flux(target: Path) -> Path:
    """Write the tiny FLUX.1 [schnell] pipeline, with safety_checker/ and feature_extractor/ beside it."""
    from diffusers import FluxPipeline

    target.mkdir(parents=True, exist_ok=True)
    pipe = FluxPipeline(**flux_components(), image_encoder=None, feature_extractor=None)
    pipe.save_pretrained(target)
    checker, extractor = safety_components()
    checker.save_pretrained(target / "safety_checker")
    extractor.save_pretrained(target / "feature_extractor")
    return target


def redux_components() -> dict[str, Any]:
    """SigLIP image encoder + Redux embedder, in the FLUX.1-Redux-dev layout (no text encoders)."""
    import torch
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    image_encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=4,
    ))  # fmt: skip
    torch.manual_seed(0)
    image_embedder = ReduxImageEncoder(redux_dim=HIDDEN, txt_in_features=T5_DIM)
    extractor = SiglipImageProcessor(
        size={"height": 32, "width": 32}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return dict(image_encoder=image_encoder, feature_extractor=extractor, image_embedder=image_embedder)


def build_tiny_redux(target: Path) -> Path:
    """Write the tiny Redux prior. Stored in bfloat16: its embedder is 12288x4096 (the real width)."""
    import torch
    from diffusers import FluxPriorReduxPipeline

    target.mkdir(parents=True, exist_ok=True)
    prior = FluxPriorReduxPipeline(**redux_components())
    prior.to(torch.bfloat16).save_pretrained(target)
    return target
