"""Accounts: API keys (only a hash of the secret is kept) and the usage they are billed, in one definition for
the stores, the API, metrics and the CLI."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "fsk_"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret_sha256: str  # only the hash is stored
    name: str
    admin: bool
    created_at: float
    revoked: bool = False


def usage_day(timestamp: float) -> str:
    """Usage is accounted per UTC day."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def image_megapixels(width: int, height: int) -> int:
    """The seed's billing unit for one image: its megapixels, rounded up."""
    return math.ceil(width * height / 1_000_000)


def megapixels(output: dict[str, Any]) -> int:
    """A result's billed megapixels: each of its images' own, summed."""
    images = [img for img in output.get("images", []) if isinstance(img, dict) and "width" in img]
    return sum(image_megapixels(img["width"], img["height"]) for img in images)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key record and the credential to hand out once: `<id>:<secret>`."""
    key_id = KEY_PREFIX + secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    return ApiKey(key_id, hash_secret(secret), name, admin, time.time()), f"{key_id}:{secret}"
