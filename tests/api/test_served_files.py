"""Served bytes are never active content: through a live server, uploads typed by their bytes, everything
else a sandboxed download; the playground, /docs and the API carry policies of their own."""

from __future__ import annotations

import base64

import pytest

pytestmark = pytest.mark.abuse

RUN = "/fal-ai/flux/schnell"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
HTML = b"<!doctype html><script>document.title = sessionStorage.getItem('fluxserve-key')</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def upload_direct(http, data: bytes, content_type: str, name: str) -> str:
    headers = {"content-type": content_type, "x-fal-file-name": name}
    r = http.post("/files/upload", content=data, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["access_url"]


def upload_initiated(http, data: bytes, content_type: str, name: str) -> str:
    init = http.post("/storage/upload/initiate", json={"content_type": content_type, "file_name": name})
    init = init.json()
    put = http.put(init["upload_url"], content=data, headers={"content-type": content_type})
    assert put.status_code == 200, put.text
    return init["file_url"]


def assert_download(response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize("upload", [upload_direct, upload_initiated])
@pytest.mark.parametrize(("data", "content_type", "name"), [(HTML, "text/html", "x.html"),
                                                            (SVG, "image/svg+xml", "x.svg"),
                                                            (HTML, "image/png", "x.png")])  # fmt: skip
def test_active_content_is_served_as_a_sandboxed_download(fake_server, upload, data, content_type, name):
    with fake_server.client() as http:
        url = upload(http, data, content_type, name)
        assert not url.endswith((".html", ".svg")), "the stored name never takes the client's extension"
        served = http.get(url)
    assert_download(served)
    assert served.content == data


@pytest.mark.parametrize("upload", [upload_direct, upload_initiated])
def test_an_image_is_served_inline_by_its_bytes_whatever_it_claims(fake_server, upload):
    with fake_server.client() as http:
        served = http.get(upload(http, PNG, "text/html", "cat.html"))
    assert served.status_code == 200 and served.content == PNG
    assert served.headers["content-type"] == "image/png" and "content-disposition" not in served.headers
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]


def test_outputs_are_served_inline_with_the_same_protections(fake_server):
    with fake_server.client() as http:
        image = http.post(RUN, json={"prompt": "x", "image_size": "square"}).json()["images"][0]
        served = http.get(image["url"])
    assert served.headers["content-type"] == image["content_type"]
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]


def test_pages_and_api_responses_carry_their_own_policies(fake_server):
    with fake_server.client() as http:
        page, script, docs = http.get("/"), http.get("/static/playground.js"), http.get("/docs")
        api = http.get("/openapi.json")
    for response in (page, script, docs, api):
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
    playground = page.headers["content-security-policy"]
    assert "script-src 'self';" in playground and "connect-src 'self'" in playground
    assert "unsafe-inline" not in playground and "frame-ancestors 'none'" in playground
    assert script.headers["content-security-policy"] == playground
    assert "'sha256-" in docs.headers["content-security-policy"]
    assert "unsafe-inline" not in docs.headers["content-security-policy"].split("style-src")[0]
    assert "sandbox" in api.headers["content-security-policy"]
