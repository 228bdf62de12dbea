"""PIL images -> the bytes fal returns (jpeg or png), and data URIs for sync_mode."""

from __future__ import annotations

import base64
import io
from typing import Any

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
EXTENSIONS = {"jpeg": "jpg", "png": "png"}
JPEG_QUALITY = 95


def encode(image: Any, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif output_format == "png":
        image.save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
