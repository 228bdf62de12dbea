"""OpenAI's Images API through the real `openai` SDK (sync and async), its base_url pointed at a live
fluxserve: generations as URLs and as base64, sizes rounded to what FLUX draws and reported back, the
formats, fal's extensions, variations (Redux), edits refused, /v1/models, and every refusal raised as the
SDK's typed error naming the field. Auth, usage and the safety checker are the fal routes' own."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine

MODEL = "fal-ai/flux/schnell"


def png(width: int = 32, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


class FlaggingEngine(FakeEngine):
    """The fake engine, whose safety checker flags every prompt that says "flag"."""

    def generate(self, spec, progress=None, image=None):
        generated = super().generate(spec, progress, image)
        if "flag" in spec.prompt:
            generated.has_nsfw_concepts = [True] * len(generated.images)
        return generated


@pytest.fixture
def server(tmp_path):
    live = start_live_server(make_settings(tmp_path, redux_enabled=True), FlaggingEngine())
    yield live
    live.stop()


def sdk(server, **kwargs) -> openai.OpenAI:
    # max_retries=0: the SDK retries 429s and 5xx by itself, which would hide what the server answered.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                         **kwargs)  # fmt: skip


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_urls_sized_as_drawn_and_downloadable(server):
    result = sdk(server).images.generate(model=MODEL, prompt="a red fox", size="1000x700", n=2)
    assert result.size == "1008x704", "each side rounded to a multiple of 16, and said"
    assert len(result.data) == 2 and result.output_format == "png" and result.created > 0
    for item in result.data:
        assert item.b64_json is None and item.revised_prompt == "a red fox"
        got = httpx.get(item.url)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (1008, 704)


def test_generate_b64_json_in_each_format_with_fal_extensions(server):
    def generated(output_format: str, **kwargs):
        return sdk(server).images.generate(prompt="a lighthouse", size="256x256", response_format="b64_json",
                                           output_format=output_format, **kwargs,
                                           extra_body={"seed": 7, "num_inference_steps": 2})  # fmt: skip

    for output_format, pil_format in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        result = generated(output_format, output_compression=80)
        image = decoded(result.data[0].b64_json)
        assert image.format == pil_format and image.size == (256, 256) and result.data[0].url is None
        assert result.output_format == output_format and result.model_extra["seed"] == 7
    first, again = (decoded(generated("png").data[0].b64_json) for _ in range(2))
    assert first.tobytes() == again.tobytes(), "seeds reproduce"


def test_the_async_client_generates_too(server):
    async def go():
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
            results = await asyncio.gather(*(
                client.images.generate(prompt=f"tile {i}", size="64x64", response_format="b64_json")
                for i in range(3)))  # fmt: skip
            return [decoded(r.data[0].b64_json).size for r in results]

    assert asyncio.run(go()) == [(64, 64)] * 3


def test_quality_and_style_are_accepted_as_the_sdk_sends_them(server, fake_engine):
    engine = server.worker.engine
    client = sdk(server)
    client.images.generate(prompt="q", size="64x64", quality="low", style="natural", user="u1")
    client.images.generate(prompt="q", size="64x64", quality="hd", style="vivid")
    assert [spec.num_inference_steps for spec in engine.calls[-2:]] == [2, 4]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 5}, "n"),
        ({"size": "big"}, "size"),
        ({"size": "99999x99999"}, "size"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "gif"}, "output_format"),
        ({"extra_body": {"cfg_scale": 7}}, "cfg_scale"),
        ({"extra_body": {"num_inference_steps": 40}}, "num_inference_steps"),
        ({"extra_body": {"partial_images": False}}, "partial_images"),
        ({"extra_body": {"stream": True}}, "stream"),
    ],
)
def test_refusals_are_the_sdks_bad_request_errors_naming_the_field(server, kwargs, param):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(server).images.generate(prompt="x", **kwargs)
    assert refused.value.param == param, refused.value.body
    assert refused.value.body["type"] == "invalid_request_error" and param in refused.value.body["message"]


def test_an_unknown_model_is_not_found_and_the_served_one_is_listed(server):
    client = sdk(server)
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="dall-e-3", prompt="x")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    assert MODEL in missing.value.message
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "black-forest-labs"


def test_a_failed_generation_is_a_server_error_and_a_flagged_one_a_content_policy_refusal(server):
    client = sdk(server)
    with pytest.raises(openai.InternalServerError) as failed:
        client.images.generate(prompt="explode", size="64x64")
    assert failed.value.body["type"] == "server_error"
    with pytest.raises(openai.BadRequestError) as flagged:
        client.images.generate(prompt="flag this", size="64x64")
    assert flagged.value.code == "content_policy_violation"


def test_variations_run_redux_on_the_upload_and_edits_are_refused(server):
    client = sdk(server)
    result = client.images.create_variation(image=("in.png", png(), "image/png"), n=2, size="256x256",
                                            response_format="b64_json")  # fmt: skip
    assert [decoded(item.b64_json).size for item in result.data] == [(256, 256)] * 2
    spec = server.worker.engine.calls[-1]
    assert spec.kind == "redux" and spec.image_url.startswith("data:image/png;base64,")
    with pytest.raises(openai.BadRequestError) as not_an_image:
        client.images.create_variation(image=("in.png", b"<svg/>", "image/png"))
    assert not_an_image.value.param == "image"
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(image=("in.png", png(), "image/png"), prompt="add a hat")
    assert refused.value.code == "unsupported_operation"


def test_keys_are_bearer_tokens_and_usage_is_the_fal_routes_own(tmp_path):
    live = start_live_server(make_settings(tmp_path, auth=True), FakeEngine())
    try:
        keys = add_keys(live.store, "alice")
        credential = keys["alice"]["authorization"].split(" ", 1)[1]
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk(live, api_key="sk-not-a-fluxserve-key").images.generate(prompt="x", size="64x64")
        assert refused.value.code == "invalid_api_key"
        sdk(live, api_key=credential).images.generate(prompt="x", size="512x512", n=2)
        usage = httpx.get(f"{live.url}/usage", headers=keys["alice"]).json()
        rows = usage["usage"] if isinstance(usage, dict) else usage
        assert sum(row["images"] for row in rows) == 2, usage
    finally:
        live.stop()
