"""Turn a user's image_url into a decoded image, safely.

Accepted: http(s) URLs (fetched by safe_http: addresses checked, size and time capped, redirects re-checked),
`data:` URIs, and URLs of fluxserve's own stored files (outputs and uploads), which are read from storage and
never fetched, so feeding one output into Redux works on loopback too. The bytes must decode as PNG, JPEG, WebP
or GIF (first frame) within a pixel budget, so a decompression bomb is refused before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from fluxserve.blobs.base import FILES_ROUTE
from fluxserve.blobs.content_types import DOWNLOAD_TYPE, image_type
from fluxserve.core.errors import FluxserveError, NotFound

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
# The largest image accepted as input; Redux looks at it through a 384x384 SigLIP anyway.
MAX_INPUT_PIXELS = 8192 * 8192
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


class ImageInputError(FluxserveError):
    """image_url could not be used; the message says why, for the 422 that names image_url."""


def check_image_url(url: str) -> str:
    """Syntax only, at submit: a scheme we accept and something to fetch. Returns the scheme."""
    if url.startswith("data:"):
        if not DATA_URI.match(url):
            raise ImageInputError("is not a valid data: URI (expected data:<mime>;base64,<data>)")
        return "data"
    try:
        # urlsplit raises on a bad bracketed host ("http://[", "https://[zz]/"), .port on a port out of range:
        # refused here with the field named, not a 500.
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read for its check)
    except ValueError:  # its message quotes the input, which a 422 never echoes
        raise ImageInputError("is not a valid URL (a malformed host or port)") from None
    if parts.scheme not in ("http", "https"):
        raise ImageInputError("must be an http://, https:// or data: URL")  # the scheme is not echoed back
    if not parts.hostname:
        raise ImageInputError("has no host")
    return parts.scheme


def data_uri_size(url: str) -> int | None:
    """The bytes a data: URI decodes to, from its length alone (nothing is decoded or copied); None when it is
    not a data: URI. Exact for valid base64; for percent-encoding, each %XX is one byte."""
    match = DATA_URI.match(url)
    if not match:
        return None
    start = match.end()
    length = len(url) - start
    if match["b64"]:
        padding = 2 if url.endswith("==") else 1 if url.endswith("=") else 0
        return max(0, length * 3 // 4 - padding)
    return length - 2 * url.count("%", start)


def check_data_uri_size(url: str, max_bytes: int) -> None:
    """At submit, so a data: URI the worker would refuse is a 422 before it is queued (and stored)."""
    size = data_uri_size(url)
    if size is not None and size > max_bytes:
        raise ImageInputError(f"is a data: URI of {size} bytes, larger than the {max_bytes} byte limit")


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    match = DATA_URI.match(url)
    if not match:
        raise ImageInputError("is not a valid data: URI")
    check_data_uri_size(url, max_bytes)  # before decoding anything larger than the cap allows
    payload = url[match.end() :]
    try:
        data = base64.b64decode(payload, validate=True) if match["b64"] else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise ImageInputError("has invalid base64 data") from None
    if len(data) > max_bytes:
        raise ImageInputError(f"is larger than the {max_bytes} byte limit")
    return data


def own_file_key(url: str, own_origins: Iterable[str]) -> str | None:
    """The blob key when url points at this server's /files/ route, else None."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    origins = {f"{urlsplit(o).scheme}://{urlsplit(o).netloc}".lower() for o in own_origins if o}
    if origin in origins and parts.path.startswith(FILES_ROUTE):
        return parts.path[len(FILES_ROUTE) :]
    return None


def decode_image(data: bytes, max_pixels: int = MAX_INPUT_PIXELS) -> Any:
    """Bytes -> an RGB PIL image, refusing other formats and oversized images before decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageInputError(f"is not an image: {len(data)} bytes that are not PNG, JPEG, WebP or GIF") from None
    except (Image.DecompressionBombError, OSError) as exc:
        raise ImageInputError(f"is not an image PNG, JPEG, WebP or GIF can decode ({exc})") from None
    if image.format not in ALLOWED_FORMATS:
        raise ImageInputError(f"is a {image.format} image; accepted: PNG, JPEG, WebP, GIF")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageInputError(f"is {width}x{height} pixels, more than the {max_pixels} allowed")
    try:
        image.seek(0)  # GIF: the first frame
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"could not be decoded ({exc})") from None


@dataclass(frozen=True)
class InputImage:
    """An image_url's image: decoded for the engine, and its bytes as fetched (for its C2PA ingredient)."""

    image: Any  # RGB PIL image
    data: bytes
    content_type: str


@dataclass
class ImageFetcher:
    """Everything needed to resolve an image_url: the safe HTTP client, our own blobs and origins."""

    client: Any  # safe_http.SafeClient
    blobs: Any  # storage BlobStore
    own_origins: tuple[str, ...]
    max_bytes: int

    def fetch_bytes(self, url: str, base_url: str) -> bytes:
        from fluxserve.net.safe_http import FetchError

        if url.startswith("data:"):
            return decode_data_uri(url, self.max_bytes)
        key = own_file_key(url, (*self.own_origins, base_url)) or self.blobs.key_for_url(url)
        if key is not None:
            try:
                return self.blobs.read(key)[0]
            except NotFound:
                raise ImageInputError("points at a file this server does not have") from None
        try:
            response = self.client.get(url)
        except FetchError as exc:
            raise ImageInputError(f"could not be fetched: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise ImageInputError(f"could not be fetched: the server answered HTTP {response.status_code}")
        return response.content

    def load(self, url: str, base_url: str) -> InputImage:
        data = self.fetch_bytes(url, base_url)
        return InputImage(decode_image(data), data, image_type(data) or DOWNLOAD_TYPE)
