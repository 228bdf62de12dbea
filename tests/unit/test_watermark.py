"""The invisible watermark (provenance/watermark.py): read back by invisible-watermark's own decoder,
survives a JPEG re-encode at quality 75, and is not found on unmarked images (false positives counted over
hundreds)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fluxserve.provenance import watermark
from fluxserve.provenance.watermark import Payload

PAYLOAD = Payload(server_id=0x3FA2, image_id=0x9C1D2E4F)


def picture(seed: int = 0, size: tuple[int, int] = (512, 512)) -> np.ndarray:
    """A smooth gradient with texture on top: closer to a generated image than noise is."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, 1 - y, (x + y) / 2], axis=-1) * rng.uniform(120, 220, 3)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))


def test_the_payload_round_trips_and_a_changed_bit_fails_its_crc():
    bits = PAYLOAD.bits()
    assert len(bits) == watermark.BITS and Payload.from_bits(bits) == PAYLOAD
    for flipped in (0, 20, 63):
        bad = bits.copy()
        bad[flipped] ^= 1
        assert Payload.from_bits(bad) is None
    # What a flat image reads as (every block votes alike) never passes.
    assert Payload.from_bits(np.zeros(64)) is None and Payload.from_bits(np.ones(64)) is None


def test_a_marked_image_reads_back_with_its_payload_and_looks_the_same():
    original = picture()
    marked = watermark.embed(original, PAYLOAD)
    reading = watermark.read(marked)
    assert reading.payload == PAYLOAD and reading.confidence > 0.95 and reading.scale == "full"
    assert psnr(original, marked) > 37


def test_invisible_watermarks_own_decoder_reads_what_fluxserve_writes():
    from imwatermark import WatermarkDecoder

    marked = watermark.embed(picture(1), PAYLOAD)
    bgr = np.ascontiguousarray(marked[:, :, ::-1])
    read = WatermarkDecoder("bytes", watermark.BITS).decode(bgr, "dwtDctSvd", scales=[0, watermark.SCALE, 0])
    assert read == np.packbits(PAYLOAD.bits()).tobytes()


def test_fluxserve_reads_a_mark_invisible_watermark_wrote():
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", np.packbits(PAYLOAD.bits()).tobytes())
    bgr = np.ascontiguousarray(picture(2)[:, :, ::-1])
    bgr = encoder.encode(bgr, "dwtDctSvd", scales=[0, watermark.SCALE, 0])
    assert watermark.read(np.ascontiguousarray(bgr[:, :, ::-1])).payload == PAYLOAD


@pytest.mark.parametrize("quality", [75, 85, 95])
def test_the_mark_survives_a_jpeg_re_encode_at_quality_75_and_up(quality):
    for seed in range(3):
        marked = watermark.embed(picture(seed, (768, 512)), PAYLOAD)
        assert watermark.read(jpeg(marked, quality)).payload == PAYLOAD, f"lost at quality {quality}"


def test_a_box_downscaled_half_size_copy_is_read_as_one():
    marked = Image.fromarray(watermark.embed(picture(3, (1024, 768)), PAYLOAD))
    half = np.asarray(marked.resize((512, 384), Image.Resampling.BOX))
    reading = watermark.read(half)
    assert reading.payload == PAYLOAD and reading.scale == "half"


def test_no_false_positives_over_three_hundred_unmarked_images():
    rng = np.random.default_rng(7)
    found = 0
    for i in range(300):
        size = (int(rng.integers(256, 640)) // 4 * 4, int(rng.integers(256, 640)) // 4 * 4)
        if i % 3 == 0:
            image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # noise
        elif i % 3 == 1:
            image = picture(1000 + i, size)
        else:
            image = np.full((size[1], size[0], 3), rng.integers(0, 256, 3), dtype=np.uint8)  # flat
        found += watermark.read(image).payload is not None
    assert found == 0, f"{found} false positives in 300 unmarked images"


def test_the_fast_singular_value_matches_lapack():
    for image in (picture(4), np.random.default_rng(4).integers(0, 256, (512, 512, 3), dtype=np.uint8)):
        band = watermark._approx_of_squares(image)
        entries = watermark._block_entries(band)
        s0, left, right = watermark._top_singular(entries)
        blocks = band.reshape(64, 4, 64, 4).transpose(0, 2, 1, 3).reshape(-1, 4, 4).astype(np.float64)
        exact_u, exact_s, exact_v = np.linalg.svd(blocks)
        assert np.abs(s0.ravel() - exact_s[:, 0]).max() < 0.01
        # The same singular vectors, up to their common sign.
        u, v = np.stack(left).reshape(4, -1).T, np.stack(right).reshape(4, -1).T
        assert np.abs(np.abs(np.einsum("ni,ni->n", u, exact_u[:, :, 0])) - 1).max() < 1e-3
        assert np.abs(np.abs(np.einsum("ni,ni->n", v, exact_v[:, 0, :])) - 1).max() < 1e-3


def test_images_under_256x256_are_not_marked():
    assert not watermark.can_mark(256, 192) and watermark.can_mark(256, 256)
    with pytest.raises(ValueError, match="too small"):
        watermark.embed(picture(size=(256, 192)), PAYLOAD)
    assert watermark.read(picture(size=(128, 96))).payload is None
