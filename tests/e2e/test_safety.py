"""The real StableDiffusionSafetyChecker: a flagged image is blacked out and reported; off means unchecked.

A random checker never flags (its concept thresholds are ones), so the tests teach it one concept: the CLIP
embedding of an image it will see, as the tiny-models notes describe. The engine's device path
(SafetyChecker.has_nsfw_concepts on uint8 pixels) is checked against stock diffusers (CLIPImageProcessor on
PIL images, then StableDiffusionSafetyChecker.forward) with the tiny model's real checker and extractor.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from fluxserve.engine.images import to_pil, to_pixels
from fluxserve.engine.placement import Placement
from fluxserve.engine.safety import SafetyChecker
from tests.conftest import make_settings, start_live_server

RUN = "/fal-ai/flux/schnell"
REQUEST = {"prompt": "a photo of a dog", "image_size": {"width": 128, "height": 128}, "seed": 5,
           "output_format": "png", "num_images": 2}  # fmt: skip
POSTPROCESS = VaeImageProcessor(vae_scale_factor=16)


@pytest.fixture
def safety(tiny_model_dir):
    """A fresh checker per test: teaching a concept changes its weights."""
    return SafetyChecker.load(tiny_model_dir, Placement(device="cpu", dtype_name="float32"))


@pytest.fixture(scope="module", params=[(96, 128), (128, 80)], ids=["landscape", "portrait"])
def decoded(request, tiny_model_dir):
    """The tiny VAE's real output for two seeded latents, (height, width) as the param says. The portrait's
    resized long edge (51) leaves an odd margin to crop: the offset must be floored as transformers does."""
    height, width = request.param
    vae = AutoencoderKL.from_pretrained(tiny_model_dir / "vae")
    latents = torch.randn(2, 16, height // 8, width // 8, generator=torch.Generator().manual_seed(1)) * 3
    with torch.inference_mode():
        return vae.decode(latents, return_dict=False)[0]


def stock_embedding(safety: SafetyChecker, image: Image.Image) -> torch.Tensor:
    checker = safety.checker
    clip_input = safety.feature_extractor([image], return_tensors="pt").pixel_values
    with torch.no_grad():
        return checker.visual_projection(checker.vision_model(clip_input)[1])[0]


def teach_concept(safety: SafetyChecker, image: Image.Image, margin: float = 0.001) -> None:
    """Concept 0 becomes `image`: cosine similarity with itself is 1, so its score is `margin` (any other
    image scores lower); forward flags a score that rounds to > 0 at 3 decimals."""
    with torch.no_grad():
        safety.checker.concept_embeds[0] = stock_embedding(safety, image)
        safety.checker.concept_embeds_weights[0] = 1 - margin


def teach_special_care(safety: SafetyChecker, image: Image.Image, margin: float) -> None:
    """Special-care concept 0 becomes `image`: when it fires, forward adds 0.01 to every concept score."""
    with torch.no_grad():
        safety.checker.special_care_embeds[0] = stock_embedding(safety, image)
        safety.checker.special_care_embeds_weights[0] = 1 - margin


def test_flagged_image_is_black_and_reported(tmp_path, engine):
    server = start_live_server(make_settings(tmp_path), engine)
    try:
        with server.client() as http:
            unchecked = http.post(RUN, json={**REQUEST, "enable_safety_checker": False}).json()
            first = Image.open(io.BytesIO(http.get(unchecked["images"][0]["url"]).content)).convert("RGB")
            teach_concept(engine.safety, first)
            checked = http.post(RUN, json=REQUEST).json()
            images = [np.asarray(Image.open(io.BytesIO(http.get(i["url"]).content))) for i in checked["images"]]
            skipped = http.post(RUN, json={**REQUEST, "enable_safety_checker": False}).json()
    finally:
        server.stop()
    assert unchecked["has_nsfw_concepts"] == [False, False]
    assert checked["has_nsfw_concepts"] == [True, False]
    assert images[0].max() == 0, "a flagged image is blacked out"
    assert images[1].max() > 0, "an unflagged image is untouched"
    assert skipped["has_nsfw_concepts"] == [False, False], "enable_safety_checker=false skips the checker"


def test_device_preprocessing_matches_clip_image_processor(safety, decoded):
    """Tolerance: one uint8 level per value, and 0.01 level on average. PIL resizes in fixed point and rounds
    each pass half up; we resize in float32: a pass that lands within float error of k + 0.5 can round the
    other way (measured here: 0.08-0.1 % of values, mean 0.001 level, never more than one level). A wrong
    mean, std or rescale factor, a missing or shifted crop, swapped channels or a one-pass resize each break
    one of the bounds."""
    pixels = to_pixels(decoded)
    expected = safety.feature_extractor(to_pil(pixels), return_tensors="pt").pixel_values
    clip_input = safety.clip_input(pixels)
    assert clip_input.shape == expected.shape == (2, 3, 32, 32) and clip_input.dtype == torch.float32
    std = torch.tensor(safety.feature_extractor.image_std).view(1, 3, 1, 1)
    levels = (clip_input - expected).abs() * std * 255  # back in uint8 steps
    assert levels.max() <= 1.001
    assert levels.mean() <= 0.01


# (concept margin, special-care margin or None, flags forward gives for [taught image, other image])
CASES = {
    "a clear match": (0.001, None, [True, False]),
    "a match forward rounds to 0.000": (0.0002, None, [False, False]),
    "special care lowers every threshold by 0.01": (-0.005, 0.001, [True, False]),
    "special care alone is no flag": (-0.02, 0.001, [False, False]),
}


@pytest.mark.parametrize(("concept", "special", "flags"), CASES.values(), ids=CASES.keys())
def test_flags_on_the_device_are_those_of_diffusers_forward(safety, decoded, concept, special, flags):
    images = POSTPROCESS.postprocess(decoded, output_type="pil")
    teach_concept(safety, images[0], concept)
    if special is not None:
        teach_special_care(safety, images[0], special)
    _, stock = safety.check(images)  # CLIPImageProcessor, then StableDiffusionSafetyChecker.forward
    assert stock == flags
    with torch.inference_mode():
        assert safety.has_nsfw_concepts(to_pixels(decoded)) == flags


def test_decode_flag_blank_then_pil(safety, decoded):
    """The engine's sequence: VAE output -> pixels on the device -> flags -> flagged rows blanked -> PIL."""
    expected = POSTPROCESS.postprocess(decoded, output_type="pil")
    teach_concept(safety, expected[0])
    with torch.inference_mode():
        pixels = to_pixels(decoded)
        flags = safety.has_nsfw_concepts(pixels)
        pixels[flags] = 0
    images = to_pil(pixels)
    assert flags == [True, False]
    assert images[0].getextrema() == ((0, 0),) * 3, "a flagged image is black"
    assert images[1].tobytes() == expected[1].tobytes(), "an unflagged image is untouched"
