"""VAE output -> pixels on the device -> PIL: byte for byte what VaeImageProcessor.postprocess gives.

Checked on the tiny model's real VAE output in float32 and bfloat16, on every bfloat16 value, and on float32
values built by hand to land exactly on the clamp edges and on k + 0.5 after the ×255 (where rounding half to
even and half up disagree).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor

from fluxserve.engine.images import to_pil, to_pixels

# FluxPipeline's own image processor: do_normalize=True, so postprocess denormalises.
POSTPROCESS = VaeImageProcessor(vae_scale_factor=16)


def decoded_by_tiny_vae(model_dir, dtype, count=2, height=128, width=96):
    """Real VAE output: seeded latents at about the spread FluxEngine.decode feeds the VAE (it divides them by
    the scaling factor 0.3611), so some pixels land beyond the [-1, 1] clamp."""
    vae = AutoencoderKL.from_pretrained(model_dir / "vae", dtype=dtype)
    latents = torch.randn(count, 16, height // 8, width // 8, generator=torch.Generator().manual_seed(0)) * 3
    with torch.inference_mode():
        return vae.decode(latents.to(dtype), return_dict=False)[0]


def reference(decoded) -> np.ndarray:
    return np.stack([np.asarray(image) for image in POSTPROCESS.postprocess(decoded, output_type="pil")])


def as_image_row(values) -> torch.Tensor:
    """Values -> a (1, 3, 1, n) 'decoded' tensor (padded with zeros to a multiple of 3 channels)."""
    padded = torch.cat([values, values.new_zeros(-len(values) % 3)])
    return padded.reshape(1, 3, 1, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pixels_of_the_tiny_vae_are_the_bytes_diffusers_makes(tiny_model_dir, dtype):
    decoded = decoded_by_tiny_vae(tiny_model_dir, dtype)
    expected = reference(decoded)
    pixels = to_pixels(decoded)
    assert pixels.dtype == torch.uint8 and pixels.device == decoded.device
    assert pixels.shape == (2, 128, 96, 3) and pixels.is_contiguous()
    assert np.array_equal(pixels.numpy(), expected)
    assert (expected == 0).any() and (expected == 255).any(), "the VAE output reaches both clamp edges"


def test_every_bfloat16_value_gives_diffusers_byte():
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    decoded = as_image_row(every[~every.isnan()])
    assert np.array_equal(to_pixels(decoded).numpy(), reference(decoded))


def float32_ties() -> tuple[np.ndarray, np.ndarray]:
    """Decoded values x whose denormalised y = x * 0.5 + 0.5 (exact for y in [0.5, 1)) has y * 255 == k + 0.5
    exactly in float32, for even k: numpy rounds these down to k, round-half-up would give k + 1."""
    xs, ks = [], []
    for k in range(128, 255, 2):
        y = np.float32((k + 0.5) / 255)
        for _ in range(8):  # the nearest float32 values around (k + 0.5) / 255
            if y * np.float32(255) == np.float32(k + 0.5):
                xs.append(np.float32(2) * y - np.float32(1))
                ks.append(k)
                break
            y = np.nextafter(y, np.float32(1) if y * np.float32(255) < k + 0.5 else np.float32(0))
    return np.array(xs, dtype=np.float32), np.array(ks)


def test_float32_ties_and_clamp_edges_give_diffusers_bytes():
    ties, even = float32_ties()
    assert len(ties) > 20, "enough exact k + 0.5 products to catch another rounding"
    one, minus_one = np.float32(1), np.float32(-1)
    beyond = [np.nextafter(minus_one, np.float32(-2)), np.nextafter(one, np.float32(2)), -2.0, 2.0]
    inside = [np.nextafter(minus_one, one), np.nextafter(one, minus_one), -0.0, 0.0, 1 / 255, -1 / 255]
    edges = np.array([minus_one, one, *beyond, -np.inf, np.inf, *inside], dtype=np.float32)
    decoded = as_image_row(torch.from_numpy(np.concatenate([ties, edges])))
    expected = reference(decoded)
    assert np.array_equal(to_pixels(decoded).numpy(), expected)
    channels_last = expected.transpose(0, 3, 1, 2).reshape(-1)  # back in the order the values were laid out
    assert np.array_equal(channels_last[: len(ties)], even), "diffusers rounds these ties half to even"


def test_pil_images_are_the_ones_diffusers_makes(tiny_model_dir):
    decoded = decoded_by_tiny_vae(tiny_model_dir, torch.bfloat16, count=3, height=64, width=128)
    images = to_pil(to_pixels(decoded))
    expected = POSTPROCESS.postprocess(decoded, output_type="pil")
    assert [(i.mode, i.size) for i in images] == [("RGB", (128, 64))] * 3
    assert [i.tobytes() for i in images] == [e.tobytes() for e in expected]


@pytest.mark.parametrize("flags", [[True, False, True], [False, False, False], [True]])
def test_flagged_rows_are_blanked_in_place_before_pil(tiny_model_dir, flags):
    decoded = decoded_by_tiny_vae(tiny_model_dir, torch.float32, count=len(flags))
    expected = POSTPROCESS.postprocess(decoded, output_type="pil")
    with torch.inference_mode():  # as in FluxEngine.generate_batch: the pixels are inference tensors
        pixels = to_pixels(decoded)
        pixels[flags] = 0
    for image, original, flagged in zip(to_pil(pixels), expected, flags):
        if flagged:
            assert image.getextrema() == ((0, 0),) * 3, "a flagged image is black"
        else:
            assert image.tobytes() == original.tobytes(), "an unflagged image is untouched"
