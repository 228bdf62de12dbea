"""A job's images -> their provenance marks and the bytes fal returns (jpeg or png; webp for the OpenAI
routes) -> blobs (data URIs in sync_mode) -> fal's output."""

from __future__ import annotations

import base64
import io
import time
from typing import TYPE_CHECKING, Any

from fluxserve.blobs.base import BlobStore, new_blob_key
from fluxserve.blobs.expiry import BlobExpiries
from fluxserve.core.jobs import GenerationSpec
from fluxserve.provenance.manifest import Ingredient
from fluxserve.provenance.stamp import Provenance

if TYPE_CHECKING:  # the type only: the worker never loads the engine package itself
    from fluxserve.engine.protocol import Generated

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
JPEG_QUALITY = 95


def encode(image: Any, output_format: str, quality: int | None = None,
           metadata: bytes | None = None) -> bytes:  # fmt: skip
    """quality: JPEG and WebP's, 0-100 (None: JPEG_QUALITY); PNG is lossless. metadata: an XMP packet to embed
    (JPEG's APP1, WebP's XMP chunk, PNG's iTXt `XML:com.adobe.xmp`: where metadata readers look)."""
    buffer = io.BytesIO()
    extra: dict[str, Any] = {} if metadata is None else {"xmp": metadata}
    if output_format in ("jpeg", "webp"):
        image.convert("RGB").save(buffer, format=output_format.upper(),
                                  quality=JPEG_QUALITY if quality is None else quality, **extra)  # fmt: skip
    elif output_format == "png":
        info = None
        if metadata is not None:
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", metadata.decode())
        image.save(buffer, format="PNG", pnginfo=info)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def build_output(
    spec: GenerationSpec, generated: Generated, blobs: BlobStore, blob_keys: list[str],
    provenance: Provenance, ingredient: Ingredient | None = None,
) -> dict[str, Any]:  # fmt: skip
    """fal's output for one job. Each key is appended to blob_keys as soon as it is stored, so a caller whose
    job then fails to complete can delete what was stored so far. The marks' time is the `provenance` stage
    of its timings."""

    def encode_as_asked(image: Any, packet: bytes | None) -> bytes:
        return encode(image, spec.output_format, spec.output_quality, packet)

    content_type = CONTENT_TYPES[spec.output_format]
    images, seconds = [], 0.0
    for index, image in enumerate(generated.images):
        stamped = provenance.stamp(image, spec, index, content_type, encode_as_asked, ingredient)
        seconds += stamped.seconds
        images.append(store_image(spec, stamped.data, image.width, image.height, blobs, blob_keys))
    return {
        "images": images,
        "timings": {**generated.timings, "provenance": seconds},
        "seed": spec.seed,
        "has_nsfw_concepts": generated.has_nsfw_concepts,
        "prompt": spec.prompt,
    }


def store_image(
    spec: GenerationSpec, data: bytes, width: int, height: int, blobs: BlobStore, blob_keys: list[str]
) -> dict[str, Any]:
    content_type = CONTENT_TYPES[spec.output_format]
    if spec.sync_mode:
        url = data_uri(data, content_type)  # sync_mode: nothing is stored
    else:
        key = new_blob_key(EXTENSIONS[spec.output_format])
        if spec.output_ttl_s is not None:  # its end first: a stored image with a lifetime is always swept
            BlobExpiries(blobs).record(key, time.time() + spec.output_ttl_s)
        blobs.put_at(key, data)
        blob_keys.append(key)
        url = blobs.url(key, spec.base_url)
    return {"url": url, "content_type": content_type, "width": width, "height": height}
