"""Images for tests: a small PNG (bytes or data URI), pixels to compare, and an image server on loopback."""

from __future__ import annotations

import base64
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image


def png_bytes(colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(colour: tuple[int, int, int] = (200, 40, 40)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(colour)).decode()


def pixels(image: Any) -> np.ndarray:
    """An image (PIL, or encoded bytes) as signed RGB pixels, so that differences do not wrap around."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image)).convert("RGB")
    return np.asarray(image, dtype=np.int16)


class ImageOrigin:
    """A PNG server on loopback: a third party from the server's point of view. With a hold, each response
    waits until `release` is set (or the hold passes), to stand for a slow origin."""

    def __init__(self, hold_s: float = 0.0) -> None:
        requested, release, data = threading.Event(), threading.Event(), png_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                requested.set()
                if hold_s:
                    release.wait(hold_s)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.requested, self.release = requested, release
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cat.png"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
