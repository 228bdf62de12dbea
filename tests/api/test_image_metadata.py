"""Every output image says in its own metadata that a trained model made it (issue 17's XMP mark): IPTC's
DigitalSourceType trainedAlgorithmicMedia, the model and the generator, read back as a metadata reader does,
from the image a client downloads, from a sync_mode data URI, and from the OpenAI route's WebP."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

import fluxserve
from fluxserve.provenance import xmp
from tests.support.waits import wait_status

SOURCE_TYPE = ('Iptc4xmpExt:DigitalSourceType='
               '"http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"')


def marks(data: bytes) -> str:
    """The XMP packet of an image, as Pillow's readers find it (JPEG APP1, PNG iTXt, WebP chunk)."""
    found = Image.open(io.BytesIO(data)).info.get("xmp")
    assert found, "no XMP packet in the image"
    return found.decode() if isinstance(found, bytes) else found


def assert_marked(data: bytes) -> None:
    packet = marks(data)
    assert SOURCE_TYPE in packet
    assert 'Iptc4xmpExt:AISystemUsed="FLUX.1 [schnell]"' in packet
    assert f'xmp:CreatorTool="fluxserve {fluxserve.__version__}"' in packet


@pytest.mark.parametrize("output_format", ["png", "jpeg"])
def test_a_downloaded_output_says_it_was_made_by_a_model(fake_server, output_format):
    with fake_server.client() as http:
        body = {"prompt": "a", "output_format": output_format}
        handle = http.post("/queue/fal-ai/flux/schnell", json=body).json()
        wait_status(http, handle, "COMPLETED")
        image = http.get(handle["response_url"]).json()["images"][0]
        data = http.get(image["url"]).content
    assert Image.open(io.BytesIO(data)).format == output_format.upper()
    assert_marked(data)


def test_a_sync_mode_data_uri_carries_the_same_marks(fake_server):
    with fake_server.client() as http:
        result = http.post("/fal-ai/flux/schnell", json={"prompt": "a", "sync_mode": True}).json()
    assert_marked(base64.b64decode(result["images"][0]["url"].split(",", 1)[1]))


def test_the_openai_routes_webp_carries_the_same_marks(fake_server):
    with fake_server.client() as http:
        body = {"prompt": "a", "response_format": "b64_json", "output_format": "webp", "size": "256x256"}
        result = http.post("/v1/images/generations", json=body).json()
    data = base64.b64decode(result["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(data)).format == "WEBP"
    assert_marked(data)


def test_redux_outputs_name_the_redux_model_and_no_packet_holds_a_prompt_or_a_date():
    assert 'AISystemUsed="FLUX.1 [schnell] Redux"' in xmp.packet("redux").decode()
    for kind in xmp.MODELS:
        packet = xmp.packet(kind).decode()
        assert "Date" not in packet and "prompt" not in packet.lower()
