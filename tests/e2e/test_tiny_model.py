"""End to end on the real tiny FLUX.1 [schnell]: real loading, sampling, safety checker and encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FailingEngine
from tests.support.images import pixels
from tests.support.specs import make_spec

RUN = "/fal-ai/flux/schnell"
SMALL = {"width": 256, "height": 192}


def generate(server, **fields):
    with server.client() as http:
        r = http.post(RUN, json={"prompt": "a photo of a cat", "image_size": SMALL, **fields})
        assert r.status_code == 200, r.text
        body = r.json()
        images = [http.get(i["url"]).content for i in body["images"]]
    return body, images


@pytest.mark.parametrize(("fmt", "pil", "mime"), [("jpeg", "JPEG", "image/jpeg"), ("png", "PNG", "image/png")])
def test_real_bytes_of_the_reported_size(tiny_server, fmt, pil, mime):
    body, (data,) = generate(tiny_server, output_format=fmt, seed=1)
    img = Image.open(io.BytesIO(data))
    assert img.format == pil and body["images"][0]["content_type"] == mime
    assert img.size == (body["images"][0]["width"], body["images"][0]["height"]) == (256, 192)


def test_default_size_is_landscape_4_3(tiny_server):
    body, (data,) = generate(tiny_server, image_size="landscape_4_3", seed=3)
    assert Image.open(io.BytesIO(data)).size == (1024, 768)


def test_custom_sizes_are_rounded_to_multiples_of_16(tiny_server):
    body, (data,) = generate(tiny_server, image_size={"width": 250, "height": 100}, seed=1, output_format="png")
    assert Image.open(io.BytesIO(data)).size == (256, 96) == (body["images"][0]["width"], body["images"][0]["height"])


def test_same_request_same_pixels_and_other_seed_other_pixels(tiny_server):
    # Pixels, not bytes: each file's C2PA manifest is signed anew (its signature and instance id differ).
    _, (a,) = generate(tiny_server, seed=42, output_format="png", image_size="square")
    _, (b,) = generate(tiny_server, seed=42, output_format="png", image_size="square")
    _, (c,) = generate(tiny_server, seed=43, output_format="png", image_size="square")
    assert a != b, "each file carries its own signature"
    assert np.array_equal(pixels(a), pixels(b)), "the watermark's image id is the same for the same request"
    assert not np.array_equal(pixels(a), pixels(c))


def test_same_seed_same_pixels_after_reloading_the_model(tiny_server, tiny_model_dir):
    from fluxserve.api.endpoints import text_to_spec
    from fluxserve.api.schemas import SchnellInput
    from fluxserve.core.settings import EngineSettings
    from fluxserve.engine.flux import FluxEngine
    from fluxserve.provenance.stamp import Provenance
    from fluxserve.worker.outputs import encode

    request = {"prompt": "a photo of a cat", "image_size": "square", "seed": 11, "output_format": "png"}
    _, (served,) = generate(tiny_server, **request)
    reloaded = FluxEngine.load(EngineSettings(model_path=tiny_model_dir, device="cpu"))
    spec = text_to_spec(SchnellInput(**request), "http://h", 2048 * 2048)
    (image,) = reloaded.generate(spec).images
    # Marked as the worker marks it, but unsigned: the pixels are the ones served.
    unsigned = Provenance(frozenset({"watermark", "metadata"}), tiny_server.worker.provenance.credentials)
    stamped = unsigned.stamp(image, spec, 0, "image/png", lambda im, packet: encode(im, "png", None, packet))
    assert stamped.watermark is not None
    assert np.array_equal(pixels(stamped.data), pixels(served))


def test_first_of_four_matches_one_within_one_level(tiny_server):
    body4, four = generate(tiny_server, seed=7, num_images=4, output_format="png")
    _, (one,) = generate(tiny_server, seed=7, num_images=1, output_format="png")
    assert len(four) == 4 and body4["has_nsfw_concepts"] == [False] * 4
    diff = np.abs(pixels(four[0]) - pixels(one))
    assert diff.max() <= 1, "batched image 0 must equal the single image up to float rounding"
    assert (diff > 0).mean() < 0.05
    # Image k uses seed + k: the second image of the batch is the single image of seed 8.
    _, (eight,) = generate(tiny_server, seed=8, output_format="png")
    assert np.abs(pixels(four[1]) - pixels(eight)).max() <= 1
    assert np.abs(pixels(four[0]) - pixels(four[1])).max() > 1


def test_num_images_run_as_one_batched_call(tiny_engine, monkeypatch):
    calls = []
    original = tiny_engine.pipe.__class__.__call__

    def spy(pipe, *args, **kwargs):
        calls.append(kwargs)
        return original(pipe, *args, **kwargs)

    monkeypatch.setattr(tiny_engine.pipe.__class__, "__call__", spy)
    spec = make_spec(num_inference_steps=2, seed=3, num_images=3, output_format="png")
    result = tiny_engine.generate(spec)
    assert len(calls) == 1 and len(calls[0]["generator"]) == 3 and calls[0]["prompt_embeds"].shape[0] == 3
    assert len(result.images) == 3


def test_a_model_failure_fails_one_request_and_the_next_succeeds(tmp_path, tiny_engine):
    server = start_live_server(make_settings(tmp_path), FailingEngine(tiny_engine))
    try:
        with server.client() as http:
            bad = http.post(RUN, json={"prompt": "explode", "image_size": SMALL})
            good = http.post(RUN, json={"prompt": "fine", "image_size": SMALL})
        assert bad.status_code == 500 and "forced failure" in bad.json()["detail"]
        assert good.status_code == 200 and len(good.json()["images"]) == 1
    finally:
        server.stop()


def test_https_with_the_generated_certificate(tiny_server):
    import ssl

    import httpx

    verify = ssl.create_default_context(cafile=str(tiny_server.cert))
    with httpx.Client(base_url=tiny_server.https_url, verify=verify, timeout=60) as http:
        r = http.post(RUN, json={"prompt": "x", "image_size": SMALL, "sync_mode": True})
    assert r.status_code == 200 and r.json()["images"][0]["url"].startswith("data:image/jpeg;base64,")


def test_the_operator_pixel_cap(tiny_server):
    with tiny_server.client() as http:
        r = http.post(RUN, json={"prompt": "x", "image_size": {"width": 1040, "height": 1024}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_size"]


def test_the_served_jpegs_watermark_survives_a_quality_75_re_encode(tiny_server):
    """The tiny model draws strong texture, the hard case for a chroma watermark (JPEG's 4:2:0 subsampling
    blends neighbouring blocks): what a user downloads, re-encoded at quality 75, still carries its ids."""
    from fluxserve.provenance import watermark

    _, (served,) = generate(tiny_server, seed=5, image_size="landscape_4_3", output_format="jpeg")
    found = watermark.read(np.asarray(Image.open(io.BytesIO(served)).convert("RGB"))).payload
    assert found is not None and found.server_id == tiny_server.worker.provenance.server_id
    again = io.BytesIO()
    Image.open(io.BytesIO(served)).convert("RGB").save(again, format="JPEG", quality=75)
    assert watermark.read(np.asarray(Image.open(again).convert("RGB"))).payload == found
