"""Redux end to end on the tiny models: data URIs, own outputs, uploads through fal_client, refusals."""

from __future__ import annotations

import io
import json

import fal_client
import pytest
from PIL import Image

from fluxserve.core.settings import UrlPolicy
from tests.conftest import make_settings, start_live_server
from tests.support.fal_clients import point_fal_client
from tests.support.images import ImageOrigin, pixels, png_bytes, png_data_uri
from tests.support.waits import wait_result

REDUX = "/fal-ai/flux/schnell/redux"
SMALL = {"width": 128, "height": 96}


def test_redux_from_a_data_uri_reproduces_with_its_seed(tiny_server):
    body = {"image_url": png_data_uri(), "image_size": SMALL, "seed": 3, "output_format": "png", "num_images": 2}
    with tiny_server.client() as http:
        first = http.post(REDUX, json=body)
        assert first.status_code == 200, first.text
        out = first.json()
        again = http.post(REDUX, json=body).json()
        other = http.post(REDUX, json={**body, "image_url": png_data_uri((10, 10, 250))}).json()
        get = lambda o: [http.get(i["url"]).content for i in o["images"]]  # noqa: E731
        a, b, c = get(out), get(again), get(other)
    assert out["prompt"] == "" and out["seed"] == 3 and len(out["has_nsfw_concepts"]) == 2
    assert [(i["width"], i["height"]) for i in out["images"]] == [(128, 96)] * 2
    # Pixels, not bytes: each file's C2PA manifest is signed anew.
    same = [pixels(x).tolist() for x in a] == [pixels(x).tolist() for x in b]
    assert same, "same image and seed, same pixels"
    assert pixels(a[0]).tolist() != pixels(c[0]).tolist(), "another input image gives another variation"
    assert pixels(a[0]).tolist() != pixels(a[1]).tolist(), "image k uses seed + k"


def test_redux_logs_its_stages_through_the_queue(tiny_server):
    with tiny_server.client() as http:
        handle = http.post("/queue" + REDUX, json={"image_url": png_data_uri(), "image_size": SMALL}).json()
        assert handle["status_url"].startswith(f"{tiny_server.url}/queue/fal-ai/flux/requests/")
        result = wait_result(http, handle)
        logs = [m["message"] for m in http.get(handle["status_url"], params={"logs": 1}).json()["logs"]]
    assert result.status_code == 200
    assert logs[:2] == ["fetch image", "image encode"] and "step 4/4" in logs


@pytest.fixture
def strict_server(tmp_path, tiny_engine):
    """A server with the default URL policy: loopback is NOT allowed for fetched URLs."""
    settings = make_settings(tmp_path, redux_enabled=True)
    settings = type(settings)(**{**settings.__dict__, "urls": UrlPolicy()})
    server = start_live_server(settings, tiny_engine)
    yield server
    server.stop()


def test_own_outputs_feed_redux_without_a_network_fetch(strict_server):
    origin = ImageOrigin()
    try:
        with strict_server.client() as http:
            text = http.post("/fal-ai/flux/schnell", json={"prompt": "a cat", "image_size": SMALL}).json()
            own = http.post(REDUX, json={"image_url": text["images"][0]["url"], "image_size": SMALL})
            refused = http.post(REDUX, json={"image_url": origin.url, "image_size": SMALL})
    finally:
        origin.server.shutdown()
    assert own.status_code == 200, own.text
    assert refused.status_code == 422
    (item,) = refused.json()["detail"]
    assert item["loc"] == ["body", "image_url"] and "loopback" in item["msg"]


def test_a_third_party_url_is_fetched_when_the_operator_allows_it(tiny_server):
    origin = ImageOrigin()
    try:
        with tiny_server.client() as http:
            r = http.post(REDUX, json={"image_url": origin.url, "image_size": SMALL})
    finally:
        origin.server.shutdown()
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("image_url", "reason"),
    [
        ("ftp://example.com/cat.png", "must be an http://, https:// or data: URL"),
        ("data:image/png;base64,bm90IGFuIGltYWdl", "is not an image"),
        ("http://10.0.0.7/cat.png", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:127.0.0.1]:9/x.png", "loopback"),
    ],
)
def test_refusals_are_422s_naming_image_url(strict_server, image_url, reason):
    with strict_server.client() as http:
        sync = http.post(REDUX, json={"image_url": image_url, "image_size": SMALL})
        queued = http.post("/queue" + REDUX, json={"image_url": image_url, "image_size": SMALL})
        if queued.status_code == 200:  # accepted at submit: refused by the worker, the job fails
            handle = queued.json()
            queued = wait_result(http, handle)
    for response in (sync, queued):
        assert response.status_code == 422, response.text
        item = response.json()["detail"][0]
        assert item["loc"] == ["body", "image_url"] and reason in item["msg"], item


def test_without_a_redux_model_the_endpoint_says_so(fake_server):
    with fake_server.client() as http:
        for path in (REDUX, "/queue" + REDUX):
            r = http.post(path, json={"image_url": png_data_uri()})
            assert r.status_code == 501 and "--redux-model" in r.json()["detail"]
            assert r.json()["error_type"] == "redux_not_configured"
        assert http.post("/fal-ai/flux/schnell", json={"prompt": "x", "image_size": "square"}).status_code == 200


def test_fal_client_upload_then_redux(tiny_server, monkeypatch, tmp_path):
    point_fal_client(monkeypatch, tiny_server.url, storage=True)
    path = tmp_path / "input.png"
    Image.new("RGB", (48, 48), (0, 128, 255)).save(path)
    url = fal_client.upload_file(path)
    assert url.startswith(f"{tiny_server.url}/files/")
    with tiny_server.client() as http:
        stored = http.get(url)
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/png"
    result = fal_client.subscribe("fal-ai/flux/schnell/redux", arguments={"image_url": url, "image_size": SMALL,
                                                                         "seed": 1})  # fmt: skip
    assert result["seed"] == 1 and (result["images"][0]["width"], result["images"][0]["height"]) == (128, 96)
    assert fal_client.run("fal-ai/flux/schnell/redux", arguments={"image_url": url, "image_size": SMALL})


def test_js_style_initiate_and_put_upload(tiny_server):
    data = png_bytes()
    with tiny_server.client() as http:
        init = http.post("/storage/upload/initiate", params={"storage_type": "fal-cdn-v3"},
                         json={"content_type": "image/png", "file_name": "cat.png"}).json()  # fmt: skip
        assert http.put(init["upload_url"], content=data, headers={"content-type": "image/png"}).status_code == 200
        assert http.get(init["file_url"]).content == data
        too_big = http.post("/files/upload", content=b"x" * (20 * 1024 * 1024 + 1))
        assert too_big.status_code == 413


def test_generate_command_with_a_local_redux_image(tiny_server, tmp_path):
    from fluxserve.cli.generate import run_generate
    from fluxserve.cli.main import build_parser

    source = tmp_path / "input.png"
    Image.new("RGB", (40, 40), (90, 200, 10)).save(source)
    args = build_parser({}).parse_args(["generate", "--redux", str(source), "--size", "64x64", "--seed", "5",
                                        "--server", tiny_server.url, "--out", str(tmp_path / "out")])  # fmt: skip
    err = io.StringIO()
    assert run_generate(args, out=err) == 0, err.getvalue()
    (saved,) = (tmp_path / "out").iterdir()
    assert saved.name.endswith("-seed5.jpg") and Image.open(saved).size == (64, 64)
    assert "image encode" in err.getvalue()


def test_a_redux_outputs_manifest_records_the_uploaded_input_and_its_digest(tiny_server, monkeypatch,
                                                                             tmp_path):  # fmt: skip
    import hashlib

    from fluxserve.provenance.manifest import INPUT_DIGEST_KEY
    from tests.support.provenance import ca_of, read_manifest

    point_fal_client(monkeypatch, tiny_server.url, storage=True)
    path = tmp_path / "input.jpg"
    Image.new("RGB", (80, 60), (250, 120, 0)).save(path, quality=90)
    url = fal_client.upload_file(path)
    result = fal_client.subscribe("fal-ai/flux/schnell/redux", arguments={"image_url": url, "seed": 2,
                                                                         "image_size": "square"})  # fmt: skip
    with tiny_server.client() as http:
        data = http.get(result["images"][0]["url"]).content
    store = read_manifest(data, trust=ca_of(tiny_server.worker.provenance.credentials))
    assert store["validation_state"] == "Trusted"
    manifest = store["manifests"][store["active_manifest"]]
    (ingredient,) = manifest["ingredients"]
    assert ingredient["relationship"] == "inputTo" and ingredient["format"] == "image/jpeg"
    assert ingredient["metadata"][INPUT_DIGEST_KEY] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "FLUX.1 [schnell] Redux" in json.dumps(manifest["assertions"])
