"""LiteLLM's OpenAI provider pointed at fluxserve (`model="openai/fal-ai/flux/schnell"`, `api_base=.../v1`):
what gateways and agent frameworks built on LiteLLM send. An image comes back as a working URL; a refusal is
LiteLLM's BadRequestError naming the field."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from PIL import Image

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

MODEL = "openai/fal-ai/flux/schnell"


@pytest.fixture(scope="module")
def litellm():
    import os

    os.environ.setdefault(
        "LITELLM_LOCAL_MODEL_COST_MAP", "True"
    )  # no fetch of its price list from the internet
    import litellm

    return litellm


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_live_server(make_settings(tmp_path_factory.mktemp("litellm")), FakeEngine())
    yield live
    live.stop()


def test_image_generation_returns_a_working_url(litellm, server):
    api = {"api_base": f"{server.url}/v1", "api_key": "unused"}
    result = litellm.image_generation(model=MODEL, prompt="a fox", size="300x200", n=2, **api)
    assert len(result.data) == 2 and result.size == "304x208"
    got = httpx.get(result.data[0].url)
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (304, 208)


def test_async_generation_and_a_refusal_naming_the_field(litellm, server):
    api = {"api_base": f"{server.url}/v1", "api_key": "unused"}
    result = asyncio.run(litellm.aimage_generation(model=MODEL, prompt="a fox", size="64x64", **api))
    assert result.data[0].url.startswith(server.url)
    with pytest.raises(litellm.BadRequestError) as refused:
        litellm.image_generation(model=MODEL, prompt="a fox", n=9, num_retries=0, **api)
    assert refused.value.status_code == 400 and "n: " in str(refused.value)
