"""The synchronous endpoint through a real HTTP server (fake engine): shapes, 422s, storage, failures."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

RUN = "/fal-ai/flux/schnell"


def test_output_has_every_spec_field(fake_server):
    with fake_server.client() as http:
        r = http.post(RUN, json={"prompt": "a cat", "seed": 5, "image_size": "square"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-fal-request-id"]
    body = r.json()
    assert set(body) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}
    assert body["seed"] == 5 and body["prompt"] == "a cat" and body["has_nsfw_concepts"] == [False]
    assert body["timings"]["inference"] >= 0
    (image,) = body["images"]
    assert image["content_type"] == "image/jpeg" and (image["width"], image["height"]) == (512, 512)
    assert image["url"].startswith(fake_server.url + "/files/")


def test_stored_images_are_served_with_their_content_type(fake_server):
    with fake_server.client() as http:
        for fmt, mime, pil in (("jpeg", "image/jpeg", "JPEG"), ("png", "image/png", "PNG")):
            body = http.post(RUN, json={"prompt": "x", "output_format": fmt, "image_size": "square"}).json()
            r = http.get(body["images"][0]["url"])
            assert r.status_code == 200 and r.headers["content-type"] == mime
            img = Image.open(io.BytesIO(r.content))
            assert img.format == pil and img.size == (512, 512)
        assert http.get("/files/0123456789abcdef0123456789abcdef.png").status_code == 404
        assert http.get("/files/..%2Fjobs.sqlite3").status_code == 404


def test_sync_mode_returns_data_uris_and_stores_nothing(fake_server, tmp_path):
    with fake_server.client() as http:
        body = http.post(RUN, json={"prompt": "x", "sync_mode": True, "output_format": "png", "num_images": 2,
                                    "image_size": {"width": 64, "height": 48}}).json()  # fmt: skip
    assert len(body["images"]) == 2
    for image in body["images"]:
        header, data = image["url"].split(",", 1)
        assert header == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 48)
    assert list((tmp_path / "files").iterdir()) == []


def test_every_input_reaches_the_engine_resolved(fake_server, fake_engine):
    body = {"prompt": "p", "image_size": {"width": 300, "height": 200}, "num_inference_steps": 7, "seed": 9,
            "guidance_scale": 12.5, "num_images": 3, "enable_safety_checker": False, "output_format": "png",
            "acceleration": "high"}  # fmt: skip
    with fake_server.client() as http:
        out = http.post(RUN, json=body).json()
    spec = fake_engine.calls[-1]
    assert (spec.width, spec.height, spec.num_inference_steps) == (304, 208, 7)
    assert (spec.seed, spec.image_seeds, spec.guidance_scale) == (9, [9, 10, 11], 12.5)
    assert (spec.enable_safety_checker, spec.output_format, spec.acceleration) == (False, "png", "high")
    assert [(i["width"], i["height"]) for i in out["images"]] == [(304, 208)] * 3
    assert out["has_nsfw_concepts"] == [False] * 3


def test_a_missing_seed_is_drawn_and_returned(fake_server, fake_engine):
    with fake_server.client() as http:
        seeds = {http.post(RUN, json={"prompt": "x", "image_size": "square"}).json()["seed"] for _ in range(3)}
    assert len(seeds) == 3
    assert {c.seed for c in fake_engine.calls} == seeds


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "prompt"]),
        ({"prompt": ""}, ["body", "prompt"]),
        ({"prompt": "x", "num_inference_steps": 13}, ["body", "num_inference_steps"]),
        ({"prompt": "x", "num_inference_steps": 0}, ["body", "num_inference_steps"]),
        ({"prompt": "x", "num_images": 5}, ["body", "num_images"]),
        ({"prompt": "x", "guidance_scale": 0.5}, ["body", "guidance_scale"]),
        ({"prompt": "x", "guidance_scale": 20.5}, ["body", "guidance_scale"]),
        ({"prompt": "x", "image_size": "huge"}, ["body", "image_size", "preset"]),
        ({"prompt": "x", "image_size": {"width": -1, "height": 5}}, ["body", "image_size", "custom", "width"]),
        ({"prompt": "x", "output_format": "webp"}, ["body", "output_format"]),
        ({"prompt": "x", "acceleration": "ludicrous"}, ["body", "acceleration"]),
        ({"prompt": "x", "seed": "abc"}, ["body", "seed"]),
        ({"prompt": ["x"]}, ["body", "prompt"]),
        ({"prompt": "x", "image_size": {"width": 2064, "height": 2048}}, ["body", "image_size"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(fake_server, fake_engine, body, loc):
    with fake_server.client() as http:
        r = http.post(RUN, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert detail[0]["loc"] == loc
    assert detail[0]["msg"] and detail[0]["type"]
    assert fake_engine.calls == [], "bad input must never reach the model"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]"])
def test_malformed_json_is_a_422(fake_server, raw):
    with fake_server.client() as http:
        r = http.post(RUN, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][0] == "body"


def test_a_model_failure_fails_that_request_only(fake_server):
    with fake_server.client() as http:
        bad = http.post(RUN, json={"prompt": "explode"})
        good = http.post(RUN, json={"prompt": "fine", "image_size": "square"})
    assert bad.status_code == 500
    assert bad.json()["error_type"] == "internal_error"
    assert "forced failure" in bad.json()["detail"]
    assert bad.headers["x-fal-request-id"] and bad.headers["x-fal-error-type"] == "internal_error"
    assert good.status_code == 200


def test_public_url_is_used_for_image_urls(tmp_path):
    server = start_live_server(make_settings(tmp_path, public_url="https://images.example.test/base/"), FakeEngine())
    try:
        with server.client() as http:
            url = http.post(RUN, json={"prompt": "x", "image_size": "square"}).json()["images"][0]["url"]
        assert url.startswith("https://images.example.test/base/files/")
    finally:
        server.stop()


def test_https_listener_serves_the_same_app(fake_server):
    import ssl

    import httpx

    verify = ssl.create_default_context(cafile=str(fake_server.cert))
    with httpx.Client(base_url=fake_server.https_url, verify=verify, timeout=30) as http:
        r = http.post(RUN, json={"prompt": "x", "image_size": "square"})
    assert r.status_code == 200
    assert r.json()["images"][0]["url"].startswith(fake_server.https_url + "/files/")


def test_stop_is_idempotent(tmp_path):
    server = start_live_server(make_settings(tmp_path), FakeEngine())
    for _ in range(3):
        server.api.request_stop()
        server.worker.stop()
    server.stop()
