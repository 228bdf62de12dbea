"""Webhook delivery end to end: fal's payload and signature headers, retries, attempts recorded on the job."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nacl.signing
import pytest

SUBMIT = "/queue/fal-ai/flux/schnell"


class Receiver:
    """A webhook receiver on loopback that answers from a script of status codes, then 200."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.script.pop(0) if receiver.script else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} deliveries, wanted {count}"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver_factory():
    made = []

    def make(script=()):
        made.append(Receiver(list(script)))
        return made[-1]

    yield make
    for r in made:
        r.close()


def verify_independently(headers: dict[str, str], body: bytes, jwks: dict) -> None:
    """What a receiver does with fal's scheme, using libsodium (PyNaCl), not fluxserve's own code."""
    message = "\n".join([
        headers["x-fal-webhook-request-id"], headers["x-fal-webhook-user-id"],
        headers["x-fal-webhook-timestamp"], hashlib.sha256(body).hexdigest(),
    ]).encode()  # fmt: skip
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    (key,) = jwks["keys"]
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    nacl.signing.VerifyKey(raw).verify(message, signature)  # raises BadSignatureError if wrong
    assert abs(time.time() - int(headers["x-fal-webhook-timestamp"])) < 300


def test_delivery_retries_until_the_receiver_accepts(fake_server, receiver_factory):
    receiver = receiver_factory([503, 500])
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "a cat", "image_size": "square", "seed": 3},
                           params={"fal_webhook": receiver.url}).json()  # fmt: skip
        receiver.wait_for(3)
        jwks = http.get("/.well-known/jwks.json").json()
        result = http.get(handle["response_url"]).json()
    headers, raw = receiver.received[-1]
    body = json.loads(raw)
    assert body == {"request_id": handle["request_id"], "gateway_request_id": handle["gateway_request_id"],
                    "status": "OK", "payload": result}  # fmt: skip
    assert headers["content-type"] == "application/json"
    verify_independently(headers, raw, jwks)
    assert [json.loads(r)["request_id"] for _, r in receiver.received] == [handle["request_id"]] * 3
    deadline = time.monotonic() + 5
    while len(attempts := fake_server.store.webhook_attempts(handle["request_id"])) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert [a["status_code"] for a in attempts] == [503, 500, 200]
    assert attempts[1]["at"] - attempts[0]["at"] >= 0.15, "retries back off"
    time.sleep(0.5)
    assert len(receiver.received) == 3, "a delivered webhook is not sent again"


def test_failed_job_sends_an_error_payload(fake_server, receiver_factory):
    receiver = receiver_factory()
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "explode"}, params={"fal_webhook": receiver.url}).json()
        receiver.wait_for(1)
    body = json.loads(receiver.received[0][1])
    assert body["status"] == "ERROR" and body["request_id"] == handle["request_id"]
    assert body["error"] == "Invalid status code: 500"
    assert body["payload"]["error_type"] == "internal_error"


def test_a_4xx_answer_is_final(fake_server, receiver_factory):
    receiver = receiver_factory([404])
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "x", "image_size": "square"},
                           params={"fal_webhook": receiver.url}).json()  # fmt: skip
        receiver.wait_for(1)
    time.sleep(0.6)
    assert len(receiver.received) == 1
    (attempt,) = fake_server.store.webhook_attempts(handle["request_id"])
    assert attempt["status_code"] == 404 and attempt["final"]


def test_unsafe_webhook_targets_are_refused_not_contacted(fake_server, receiver_factory):
    """10.0.0.1 is private and not allowed by the test settings (loopback only): refused before connecting."""
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "x", "image_size": "square"},
                           params={"fal_webhook": "http://10.0.0.1/hook"}).json()  # fmt: skip
        deadline = time.monotonic() + 10
        while not (attempts := fake_server.store.webhook_attempts(handle["request_id"])):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    (attempt,) = attempts
    assert attempt["final"] and attempt["status_code"] is None and "10.0.0.1" in attempt["error"]


def test_cancel_is_not_blocked_by_a_slow_receiver(fake_server, fake_engine, receiver_factory):
    receiver = receiver_factory()
    fake_engine.gate.clear()
    with fake_server.client() as http:
        blocker = http.post(SUBMIT, json={"prompt": "x"}, params={"fal_webhook": receiver.url}).json()
        queued = http.post(SUBMIT, json={"prompt": "y"}, params={"fal_webhook": receiver.url}).json()
        started = time.monotonic()
        assert http.put(queued["cancel_url"]).status_code == 202
        assert time.monotonic() - started < 1
        receiver.wait_for(1)
        body = json.loads(receiver.received[0][1])
        assert body["request_id"] == queued["request_id"] and body["status"] == "ERROR"
        assert body["payload"]["error_type"] == "client_cancelled"
        fake_engine.gate.set()
        receiver.wait_for(2)
    assert json.loads(receiver.received[1][1])["request_id"] == blocker["request_id"]
