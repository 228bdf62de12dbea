"""image_url handling without a network: data URIs, own files, formats, bombs, and DNS answers that change."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from fluxserve.blobs.local import LocalBlobStore
from fluxserve.net.image_inputs import (
    ImageFetcher,
    ImageInputError,
    check_data_uri_size,
    check_image_url,
    data_uri_size,
    decode_data_uri,
    decode_image,
    own_file_key,
)
from fluxserve.net.safe_http import GuardedBackend, UrlPolicy


def encoded(fmt: str, size=(8, 6), **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_accepted_formats_decode_to_rgb(fmt):
    image = decode_image(encoded(fmt))
    assert image.mode == "RGB" and image.size == (8, 6)


def test_other_formats_and_non_images_are_refused():
    with pytest.raises(ImageInputError, match="BMP image; accepted: PNG, JPEG, WebP, GIF"):
        decode_image(encoded("BMP"))
    with pytest.raises(ImageInputError, match="is not an image"):
        decode_image(b"<html>not an image</html>")
    with pytest.raises(ImageInputError, match="is not an image"):
        decode_image(encoded("PNG")[:40])


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = encoded("PNG", size=(4000, 4000))  # a few KB of zlib, 16 M pixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageInputError, match="4000x4000 pixels, more than"):
        decode_image(bomb, max_pixels=10_000_000)


def test_data_uris():
    png = encoded("PNG")
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert decode_data_uri(uri, max_bytes=10_000) == png
    with pytest.raises(ImageInputError, match="larger than the 10 byte limit"):
        decode_data_uri(uri, max_bytes=10)
    with pytest.raises(ImageInputError, match="invalid base64"):
        decode_data_uri("data:image/png;base64,@@@@", max_bytes=100)


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://host/x.png", "must be an http://, https:// or data: URL"), ("https:///x.png", "has no host"),
     ("data:image/png,no-base64-marker-is-fine", None), ("data:nonsense", "not a valid data: URI"),
     ("file:///etc/passwd", "must be an http://")],
)  # fmt: skip
def test_syntax_check_at_submit(url, message):
    if message is None:
        assert check_image_url(url) == "data"
    else:
        with pytest.raises(ImageInputError, match=message):
            check_image_url(url)


def test_own_files_are_read_from_storage_and_never_fetched(tmp_path):
    blobs = LocalBlobStore.open(tmp_path)
    key = blobs.put(encoded("PNG"), "image/png", "png")

    class NoNetwork:
        def get(self, url):
            pytest.fail(f"fetched {url} over the network")

    fetcher = ImageFetcher(NoNetwork(), blobs, ("http://127.0.0.1:8000",), max_bytes=10**6)
    first = fetcher.load(f"http://127.0.0.1:8000/files/{key}", "https://127.0.0.1:8443")
    assert first.image.size == (8, 6) and first.data == encoded("PNG") and first.content_type == "image/png"
    assert fetcher.load(f"https://127.0.0.1:8443/files/{key}", "https://127.0.0.1:8443").image.size == (8, 6)
    with pytest.raises(ImageInputError, match="does not have"):
        fetcher.load("http://127.0.0.1:8000/files/0123456789abcdef0123456789abcdef.png", "http://x")
    assert own_file_key(f"http://evil.example/files/{key}", ("http://127.0.0.1:8000",)) is None


def test_a_dns_answer_that_changes_after_the_check_is_never_used():
    """Rebinding: the name is resolved once, checked, and the connection goes to that checked address."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    connected = []

    class Recorder:
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            connected.append(host)
            raise ConnectionRefusedError("recorded, not connected")

    backend = GuardedBackend(UrlPolicy(), resolver=lambda host, port: next(answers), backend=Recorder())
    with pytest.raises(OSError):
        backend.connect_tcp("rebind.example", 80)
    assert connected == ["93.184.216.34"], "connected to the checked address, not a second lookup"


@pytest.mark.parametrize("size", range(0, 13))
def test_a_data_uris_size_is_known_from_its_length(size):
    payload = bytes(range(size))
    assert data_uri_size("data:image/png;base64," + base64.b64encode(payload).decode()) == size
    assert data_uri_size("data:application/octet-stream," + "".join(f"%{b:02x}" for b in payload)) == size


def test_a_data_uri_over_the_cap_is_refused_without_decoding():
    uri = "data:image/png;base64," + "A" * 40_000_000  # 30 MB decoded; measured, never decoded
    with pytest.raises(ImageInputError, match="30000000 bytes, larger than the 20971520 byte limit"):
        check_data_uri_size(uri, 20 * 1024 * 1024)
    check_data_uri_size("https://example.invalid/x.png", 1)  # not a data: URI: fetched and capped later
    assert data_uri_size("https://example.invalid/x.png") is None
