"""The type a stored file is served with, read from its bytes, never from a client's name or Content-Type.

Only these image formats are ever served inline. Anything else (HTML, SVG, PDF, text, unknown) is served as an
opaque download, so an uploader can never make the API's origin (or the bucket's) render active content.
"""

from __future__ import annotations

DOWNLOAD_TYPE = "application/octet-stream"
# Magic numbers of the formats served inline. SVG is deliberately absent: it is XML that can carry script.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(data: bytes) -> str | None:
    """The allow-listed image type whose signature starts data, else None."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def served_type(data: bytes) -> tuple[str, bool]:
    """(content type, inline): an allow-listed image inline, everything else as an attachment download."""
    content_type = image_type(data)
    return (content_type, True) if content_type else (DOWNLOAD_TYPE, False)
