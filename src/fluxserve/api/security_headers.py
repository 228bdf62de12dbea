"""Security headers on every response: no type sniffing anywhere, and a Content-Security-Policy per page kind.

The playground holds an API key, so its page may run only fluxserve's own scripts and talk only to fluxserve;
/docs may also run the one inline script Swagger UI's page carries (allowed by its hash, see docs_policy); API
responses and served files get policies that allow nothing. A route that sets its own policy keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

NOSNIFF = (b"x-content-type-options", b"nosniff")
# Generated images may live in an S3 bucket or on a CDN (another origin); images are passive, so any source.
PLAYGROUND_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                  "img-src 'self' data: blob: https: http:; base-uri 'none'; form-action 'none'; "
                  "frame-ancestors 'none'")  # fmt: skip
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
PLAYGROUND_PATHS = ("/static/",)
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_policy(html: str) -> str:
    """The CSP for a Swagger UI page: its own assets, plus exactly the inline scripts this html carries."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in INLINE_SCRIPT.findall(html))  # fmt: skip
    return (f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def policy_for(path: str) -> str:
    return PLAYGROUND_CSP if path == "/" or path.startswith(PLAYGROUND_PATHS) else API_CSP


class SecurityHeaders:
    """Pure ASGI (not BaseHTTPMiddleware), so status streams pass through unbuffered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = policy_for(scope["path"]).encode()

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if NOSNIFF[0] not in names:
                    headers.append(NOSNIFF)
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", csp))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: Any) -> None:
    app.add_middleware(SecurityHeaders)
