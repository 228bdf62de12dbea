"""Webhooks as fal sends them: body shapes, ED25519 signatures checked with an independent implementation
(PyNaCl/libsodium), the JWKS, the key file, the retry schedule, and single deliveries to a local receiver."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest

from fluxserve.net.safe_http import SafeClient, UrlPolicy
from fluxserve.net.webhooks import (
    USER_AGENT,
    Attempt,
    RetryPolicy,
    WebhookSigner,
    deliver_once,
    is_retryable,
    verify,
    webhook_body,
)
from tests.support.network import FailingBackend

BODY = b'{"request_id":"req-1","status":"OK","payload":{"seed":42}}'
NOW = 1_760_000_000


@pytest.fixture(scope="module")
def signer() -> WebhookSigner:
    return WebhookSigner.generate()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def receiver_message(headers: dict[str, str], body: bytes) -> bytes:
    """The signed message rebuilt the way a receiver following fal's docs does it, not with our helper."""
    return "\n".join([
        headers["X-Fal-Webhook-Request-Id"],
        headers["X-Fal-Webhook-User-Id"],
        headers["X-Fal-Webhook-Timestamp"],
        hashlib.sha256(body).hexdigest(),
    ]).encode("utf-8")  # fmt: skip


def nacl_verifies(jwks: dict[str, Any], headers: dict[str, str], body: bytes) -> bool:
    signature = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    for jwk in jwks["keys"]:
        try:
            nacl.signing.VerifyKey(b64url_decode(jwk["x"])).verify(receiver_message(headers, body), signature)
            return True
        except nacl.exceptions.BadSignatureError:
            continue
    return False


# --- signatures ----------------------------------------------------------------------------------------


def test_signature_verifies_with_libsodium_and_with_our_helper(signer):
    headers = signer.sign("req-1", "user-1", NOW, BODY)
    assert sorted(headers) == [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-Signature",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-User-Id",
    ]
    assert headers["X-Fal-Webhook-Timestamp"] == str(NOW)
    assert len(bytes.fromhex(headers["X-Fal-Webhook-Signature"])) == 64
    assert nacl_verifies(signer.jwks(), headers, BODY)
    assert verify(headers, BODY, signer.jwks(), now=NOW)
    lowered = {name.lower(): value for name, value in headers.items()}  # as many servers hand them over
    assert verify(lowered, BODY, signer.jwks(), now=NOW + 299)


def test_tampered_body_wrong_key_and_stale_timestamp_fail(signer):
    headers = signer.sign("req-1", "user-1", NOW, BODY)
    tampered = BODY.replace(b"42", b"43")
    other = WebhookSigner.generate()
    assert not nacl_verifies(signer.jwks(), headers, tampered)
    assert not verify(headers, tampered, signer.jwks(), now=NOW)
    assert not nacl_verifies(other.jwks(), headers, BODY)
    assert not verify(headers, BODY, other.jwks(), now=NOW)
    assert not verify(headers, BODY, signer.jwks(), now=NOW + 301)
    assert not verify(headers, BODY, signer.jwks(), now=NOW - 301)
    assert not verify({**headers, "X-Fal-Webhook-Request-Id": "req-2"}, BODY, signer.jwks(), now=NOW)
    assert not verify({**headers, "X-Fal-Webhook-Signature": "not hex"}, BODY, signer.jwks(), now=NOW)
    missing = {k: v for k, v in headers.items() if k != "X-Fal-Webhook-User-Id"}
    assert not verify(missing, BODY, signer.jwks(), now=NOW)


def test_receivers_try_every_published_key(signer):
    headers = signer.sign("req-1", "user-1", NOW, BODY)
    rotated = {"keys": [*WebhookSigner.generate().jwks()["keys"], *signer.jwks()["keys"]]}
    assert verify(headers, BODY, rotated, now=NOW)
    assert nacl_verifies(rotated, headers, BODY)


def test_jwks_shape(signer):
    jwks = signer.jwks()
    assert list(jwks) == ["keys"] and len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert {k: jwk[k] for k in ("kty", "crv", "use", "alg")} == {
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA"
    }  # fmt: skip
    assert "=" not in jwk["x"]
    assert b64url_decode(jwk["x"]) == signer.public_key and len(signer.public_key) == 32
    assert jwk["kid"] == signer.kid == hashlib.sha256(signer.public_key).hexdigest()[:16]


def test_key_is_created_once_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "webhook-ed25519.pem"
    first = WebhookSigner.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    second = WebhookSigner.load_or_create(path)
    assert second.jwks() == first.jwks()
    assert path.read_bytes() == pem
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary files left behind"


# --- bodies --------------------------------------------------------------------------------------------


def test_ok_body():
    output = {"images": [{"url": "http://x/y.jpg"}], "seed": 1}
    assert webhook_body("req-1", "gw-1", output=output, error_status=None, error_body=None) == {
        "request_id": "req-1", "gateway_request_id": "gw-1", "status": "OK", "payload": output
    }  # fmt: skip


def test_error_body():
    detail = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]}
    assert webhook_body("req-1", "gw-1", output=None, error_status=422, error_body=detail) == {
        "request_id": "req-1", "gateway_request_id": "gw-1", "status": "ERROR",
        "error": "Invalid status code: 422", "payload": detail,
    }  # fmt: skip


# --- retry schedule ------------------------------------------------------------------------------------


def test_delays_grow_exponentially_and_are_capped():
    policy = RetryPolicy()
    delays = [policy.delay_after(n) for n in range(1, 13)]
    assert delays[:4] == [15, 30, 60, 120]
    assert all(b == min(2 * a, 3600) for a, b in zip(delays, delays[1:]))
    assert max(delays) == 3600
    with pytest.raises(ValueError):
        policy.delay_after(0)


def test_default_schedule_spans_about_two_hours():
    schedule = RetryPolicy().schedule()
    assert len(schedule) == 9  # 10 attempts, 9 waits
    assert 1.5 * 3600 <= sum(schedule) <= 2.5 * 3600


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(None, True), (429, True), (500, True), (503, True), (200, False), (301, False), (400, False),
     (404, False), (422, False)],
)  # fmt: skip
def test_is_retryable(status, retryable):
    assert is_retryable(status) is retryable
    assert RetryPolicy.is_retryable(status) is retryable


def test_should_retry_stops_at_final_attempts_and_the_attempt_limit():
    policy = RetryPolicy(max_attempts=3)
    failed = Attempt(number=1, at=NOW, status_code=500, error="x", duration_s=0.1)
    assert policy.should_retry(failed)
    assert not policy.should_retry(Attempt(3, NOW, 500, "x", 0.1))
    assert not policy.should_retry(Attempt(1, NOW, 200, None, 0.1, final=True))


def test_attempt_round_trips_through_a_dict():
    attempt = Attempt(number=2, at=NOW + 0.5, status_code=None, error="refused", duration_s=0.01, final=True)
    assert Attempt.from_dict(json.loads(json.dumps(attempt.to_dict()))) == attempt


# --- one delivery, to a receiver on 127.0.0.1 -----------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def make_handler(received: list[Received]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(Received(self.path, dict(self.headers.items()), body))
            status = int(self.path.rsplit("/", 1)[1])  # /status/<code>
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/status/200")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    received: list[Received] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(received))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Receiver(server, received)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def client() -> Iterator[SafeClient]:
    policy = UrlPolicy(
        allowed_networks=("127.0.0.1/32",), connect_timeout_s=1, read_timeout_s=2, total_timeout_s=3
    )
    with SafeClient(policy) as c:
        yield c


def payload() -> dict[str, Any]:
    output = {"images": [], "seed": 7}
    return webhook_body("req-1", "req-1", output=output, error_status=None, error_body=None)


def test_successful_delivery_is_signed_and_recorded(client, receiver, signer):
    before = len(receiver.received)
    attempt = deliver_once(client, receiver.url("/status/200"), payload(), signer, "req-1", "user-1",
                           clock=lambda: NOW)  # fmt: skip
    assert (attempt.number, attempt.at, attempt.status_code, attempt.error) == (1, NOW, 200, None)
    assert attempt.succeeded and attempt.final and attempt.duration_s >= 0
    (got,) = receiver.received[before:]
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == USER_AGENT
    assert json.loads(got.body) == payload()
    assert verify(got.headers, got.body, signer.jwks(), now=NOW)
    assert nacl_verifies(signer.jwks(), got.headers, got.body)


@pytest.mark.parametrize(
    ("status", "final"), [(500, False), (503, False), (429, False), (404, True), (400, True), (307, True)]
)
def test_receiver_errors_are_recorded_retryable_or_final(client, receiver, signer, status, final):
    attempt = deliver_once(client, receiver.url(f"/status/{status}"), payload(), signer, "req-1", "user-1",
                           number=3)  # fmt: skip
    assert (attempt.number, attempt.status_code, attempt.final) == (3, status, final)
    assert not attempt.succeeded and str(status) in (attempt.error or "")


def test_redirects_are_not_followed_for_webhooks(client, receiver, signer):
    before = len(receiver.received)
    deliver_once(client, receiver.url("/status/307"), payload(), signer, "req-1", "user-1")
    assert [r.path for r in receiver.received[before:]] == ["/status/307"]


def test_connection_refused_is_an_error_and_retryable(client, signer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    attempt = deliver_once(client, f"http://127.0.0.1:{port}/hook", payload(), signer, "req-1", "user-1")
    assert attempt.status_code is None and attempt.error
    assert not attempt.final and RetryPolicy().should_retry(attempt)


def test_unsafe_target_is_final_and_never_connected(signer):
    def resolver(host: str, port: int) -> list[str]:
        assert host == "hook.example"
        return ["10.0.0.5"]

    client = SafeClient(UrlPolicy(), resolver=resolver, backend=FailingBackend())
    cases = {
        "https://hook.example/webhook": "hook.example (10.0.0.5): private",
        "http://10.0.0.7/webhook": "10.0.0.7: private",
        "ftp://hook.example/x": "scheme 'ftp'",
    }
    for url, why in cases.items():
        attempt = deliver_once(client, url, payload(), signer, "req-1", "user-1")
        assert attempt.status_code is None and why in (attempt.error or "")
        assert attempt.final and not RetryPolicy().should_retry(attempt)
