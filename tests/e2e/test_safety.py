"""The real StableDiffusionSafetyChecker: a flagged image is blacked out and reported; off means unchecked.

A random checker never flags (its concept thresholds are ones), so the test teaches it one concept: the CLIP
embedding of the image the request will produce, as the tiny-models notes describe.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fluxserve.config import EngineSettings
from fluxserve.engine.pipeline import FluxEngine
from tests.conftest import make_settings, start_live_server

RUN = "/fal-ai/flux/schnell"
REQUEST = {"prompt": "a photo of a dog", "image_size": {"width": 128, "height": 128}, "seed": 5,
           "output_format": "png", "num_images": 2}  # fmt: skip


@pytest.fixture
def engine(tiny_model_dir):
    return FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu"))


def teach_concept(engine: FluxEngine, image: Image.Image) -> None:
    checker = engine.safety.checker
    clip_input = engine.safety.feature_extractor([image], return_tensors="pt").pixel_values
    with torch.no_grad():
        embedding = checker.visual_projection(checker.vision_model(clip_input)[1])[0]
        checker.concept_embeds[0] = embedding
        # Cosine similarity with itself is 1; any other image scores below this threshold.
        checker.concept_embeds_weights[0] = 0.999


def test_flagged_image_is_black_and_reported(tmp_path, engine):
    server = start_live_server(make_settings(tmp_path), engine)
    try:
        with server.client() as http:
            unchecked = http.post(RUN, json={**REQUEST, "enable_safety_checker": False}).json()
            first = Image.open(io.BytesIO(http.get(unchecked["images"][0]["url"]).content)).convert("RGB")
            teach_concept(engine, first)
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
