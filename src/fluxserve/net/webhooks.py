"""fal-compatible webhooks: the payload, its ED25519 signature, the published keys (JWKS), the retry
schedule, and one delivery attempt.

The wire format matches fal's so that receivers written for fal work unchanged:
- `POST <url>` with a JSON body: `{"request_id", "gateway_request_id", "status": "OK", "payload": <output>}`
  or `{..., "status": "ERROR", "error": "Invalid status code: 422", "payload": <error body>}`;
- headers X-Fal-Webhook-Request-Id / -User-Id / -Timestamp (unix seconds) / -Signature (hex ED25519) where
  the signed message is `request_id \\n user_id \\n timestamp \\n sha256_hex(raw body)`;
- the public keys as a JWKS of OKP/Ed25519 keys; receivers reject timestamps more than 300 s off.

Scheduling the retries (and persisting attempts) is the caller's job; this module decides what one attempt
did and whether another one makes sense.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from httpcore import ConnectError

from fluxserve.core.errors import InputError
from fluxserve.core.settings import RetryPolicy, is_retryable  # noqa: F401 (RetryPolicy re-exported)
from fluxserve.net.safe_http import (
    FetchError,
    GuardedBackend,
    InvalidUrl,
    Resolver,
    SafeClient,
    UnsafeUrl,
    UrlPolicy,
    parse_url,
    system_resolver,
)

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"
USER_AGENT = "fluxserve-webhook/1"
TIMESTAMP_TOLERANCE_S = 300


# --- payload -------------------------------------------------------------------------------------------


def webhook_body(
    request_id: str,
    gateway_request_id: str,
    *,
    output: dict[str, Any] | None,
    error_status: int | None = None,
    error_body: Any = None,
) -> dict[str, Any]:
    """fal's webhook body: the OK form carrying the output, or (output None) the ERROR form carrying the
    error response the status endpoint would have given."""
    ids = {"request_id": request_id, "gateway_request_id": gateway_request_id}
    if output is not None:
        return {**ids, "status": "OK", "payload": output}
    return {**ids, "status": "ERROR", "error": f"Invalid status code: {error_status}", "payload": error_body}


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The bytes sent and signed: serialised once, so the signature covers exactly what goes on the wire."""
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: the ids, the timestamp and the body's SHA-256, one per line."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{request_id}\n{user_id}\n{timestamp}\n{digest}".encode()


# --- signing and keys ----------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WebhookSigner:
    """Signs webhook deliveries with one ED25519 key and publishes its public half as a JWKS."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> WebhookSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> WebhookSigner:
        """The key at path (PEM, PKCS8), created with mode 0600 on first use. Receivers pin the published
        key, so it must survive restarts; concurrent first starts agree on one key (see _write_new_secret)."""
        if path.exists():
            return cls(_load_private_key(path))
        signer = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_new_secret(path, signer.private_pem())
        except FileExistsError:  # another process created it first: use theirs
            return cls(_load_private_key(path))
        return signer

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def kid(self) -> str:
        """A key id derived from the key, so it is stable across restarts and changes when the key does."""
        return hashlib.sha256(self.public_key).hexdigest()[:16]

    def sign(self, request_id: str, user_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The four X-Fal-Webhook-* headers for a delivery of body (the exact bytes sent)."""
        message = signed_message(request_id, user_id, str(timestamp), body)
        return {
            HEADER_REQUEST_ID: request_id,
            HEADER_USER_ID: user_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: self._key.sign(message).hex(),
        }

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self.public_key),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _write_new_secret(path: Path, data: bytes) -> None:
    """Write data to path with mode 0600, raising FileExistsError if path exists. The file is complete
    before it appears (temp file + hard link), so a concurrent reader never loads half a key."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and unlike rename it refuses to replace an existing file
    finally:
        os.unlink(tmp)


# --- verification (what a receiver does) ---------------------------------------------------------------


def verify(
    headers: Mapping[str, str],
    body: bytes,
    jwks: Mapping[str, Any],
    now: float,
    tolerance_s: float = TIMESTAMP_TOLERANCE_S,
) -> bool:
    """True if body carries a valid signature by one of jwks' keys and a timestamp within tolerance_s of
    now. Receiver-side helper; never raises on malformed input (that is simply not a valid signature)."""
    fields = _signature_fields(headers)
    if fields is None:
        return False
    request_id, user_id, timestamp, signature_hex = fields
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > tolerance_s:
        return False
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    message = signed_message(request_id, user_id, timestamp, body)
    return any(_signature_holds(key, signature, message) for key in _ed25519_keys(jwks))


def _signature_fields(headers: Mapping[str, str]) -> tuple[str, str, str, str] | None:
    # Header names are case-insensitive on the wire; servers often hand them over lower-cased.
    lowered = {name.lower(): value for name, value in headers.items()}
    names = (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
    values = [lowered.get(name.lower()) for name in names]
    if any(value is None for value in values):
        return None
    request_id, user_id, timestamp, signature = (str(value) for value in values)
    return request_id, user_id, timestamp, signature


def _ed25519_keys(jwks: Mapping[str, Any]) -> Iterator[Ed25519PublicKey]:
    """The usable Ed25519 keys of a JWKS; others and malformed ones are skipped."""
    for jwk in jwks.get("keys", []):
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            raw = _b64url_decode(str(jwk.get("x", "")))
            yield Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            continue


def _signature_holds(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --- retries -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as stored with the job and shown to the operator."""

    number: int  # 1 for the first attempt
    at: float  # unix time it started
    status_code: int | None  # the receiver's answer; None if there was none
    error: str | None  # why it did not succeed; None if it did
    duration_s: float
    final: bool = False  # do not try again: it succeeded, or failed in a way retrying cannot fix

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code <= 299

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            number=int(data["number"]),
            at=float(data["at"]),
            status_code=None if data.get("status_code") is None else int(data["status_code"]),
            error=data.get("error"),
            duration_s=float(data["duration_s"]),
            final=bool(data.get("final", False)),
        )


# --- one delivery --------------------------------------------------------------------------------------


def deliver_once(
    client: SafeClient,
    url: str,
    body: Mapping[str, Any],
    signer: WebhookSigner,
    request_id: str,
    user_id: str,
    clock: Callable[[], float] = time.time,
    number: int = 1,
) -> Attempt:
    """POST the signed body to url once and say how it went. Never raises for what the network or the
    receiver does: refused, unreachable, slow, or unsafe targets all become the Attempt's error."""
    raw = encode_body(body)
    started_at = clock()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers.update(signer.sign(request_id, user_id, int(started_at), raw))
    t0 = time.monotonic()
    try:
        response = client.post(url, raw, headers)
    except (UnsafeUrl, InvalidUrl) as exc:  # the URL itself is the problem: no retry will fix it
        return Attempt(number, started_at, None, str(exc), time.monotonic() - t0, final=True)
    except (FetchError, OSError) as exc:
        return Attempt(number, started_at, None, str(exc) or type(exc).__name__, time.monotonic() - t0)
    return _attempt_from_status(number, started_at, response.status_code, time.monotonic() - t0)


def _attempt_from_status(number: int, at: float, status: int, duration_s: float) -> Attempt:
    ok = 200 <= status <= 299
    error = None if ok else f"receiver answered HTTP {status}"
    return Attempt(number, at, status, error, duration_s, final=not is_retryable(status))


# --- the target, checked at submit ---------------------------------------------------------------------


class WebhookTargets:
    """The submit-time check of `fal_webhook`, under the same UrlPolicy (and resolver) the dispatcher delivers
    with: a target that delivery would refuse is a 422 at submit, not a webhook that silently never comes.

    Delivery checks again, after its own resolution, so a name re-pointed in between is still refused then.
    A name that does not resolve now is let through: DNS may be down for a moment, and delivery retries."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        # Only its address checks are used here: it never connects.
        self._addresses = GuardedBackend(policy, resolver)

    def check(self, url: str | None) -> str | None:
        """url, unchanged, if the policy lets a webhook reach it; else InputError naming fal_webhook."""
        if url is None:
            return None
        try:
            target = parse_url(url, self.policy)
            self._addresses.checked_addresses(target.host, target.port)
        except InvalidUrl as exc:
            message = f"not a URL a webhook can be sent to: {exc}"
            raise InputError("fal_webhook", message, "url_parsing", "query") from None
        except UnsafeUrl as exc:
            raise InputError("fal_webhook", str(exc), "url_not_allowed", "query") from None
        except ConnectError:
            pass  # does not resolve right now: see the class docstring
        return url


async def checked_webhook_target(targets: WebhookTargets | None, url: str | None) -> str | None:
    """For the submit route: the target checked off the event loop (resolving a name may take a while). With
    no targets configured (an app built without a server), the default policy: public addresses only."""
    if url is None:
        return None
    return await asyncio.to_thread((targets or WebhookTargets(UrlPolicy())).check, url)

