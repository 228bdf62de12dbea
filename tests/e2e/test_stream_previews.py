"""Step previews on the real tiny FLUX.1 [schnell]: the fixed latent-to-RGB projection, at the latent size."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.support.specs import make_spec


class RecordingProgress:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int, list[str] | None]] = []

    def stage(self, name: str) -> None:
        return None

    def step(self, step: int, total: int, previews: list[str] | None = None) -> None:
        self.steps.append((step, total, previews))


def decoded(uri: str) -> Image.Image:
    head, _, data = uri.partition(",")
    assert head == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "JPEG"
    return image


def test_projection_maps_each_latent_pixel_through_the_fixed_factors():
    import torch

    from fluxserve.engine.previews import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, latent_rgb

    latents = torch.zeros(1, 16, 2, 3)
    latents[0, 4, 1, 2] = 4.0  # one channel at one pixel: that pixel is bias + 4 * its row of factors
    rgb = latent_rgb(latents)
    assert rgb.shape == (1, 2, 3, 3) and rgb.dtype == torch.uint8
    expected = [
        round((max(-1, min(1, b + 4 * f)) + 1) * 127.5)
        for f, b in zip(LATENT_RGB_FACTORS[4], LATENT_RGB_BIAS)
    ]
    assert rgb[0, 1, 2].tolist() == expected
    assert rgb[0, 0, 0].tolist() == [round((b + 1) * 127.5) for b in LATENT_RGB_BIAS]


@pytest.mark.parametrize("previews", [True, False])
def test_tiny_engine_reports_a_latent_sized_jpeg_per_image_and_step_only_when_asked(tiny_engine, previews):
    spec = make_spec(width=256, height=192, num_inference_steps=2, num_images=2, previews=previews)
    progress = RecordingProgress()
    (result,) = tiny_engine.generate_batch([spec], progress)
    assert [(step, total) for step, total, _ in progress.steps] == [(1, 2), (2, 2)]
    if not previews:
        assert all(shown is None for _, _, shown in progress.steps)
        return
    for _, _, shown in progress.steps:
        assert shown is not None and [decoded(uri).size for uri in shown] == [(32, 24), (32, 24)]
    assert [image.size for image in result.images] == [(256, 192)] * 2
