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

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.waits import wait_until

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
        wait_until(lambda: len(self.received) >= count, timeout, f"{count} deliveries")

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
    recorded = lambda: (seen := fake_server.store.webhook_attempts(handle["request_id"]))[2:] and seen  # noqa: E731
    attempts = wait_until(recorded, 5, "three recorded attempts")
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


@pytest.mark.parametrize("target", [
    "http://10.0.0.1/hook",  # private
    "http://[::1]:9/hook",  # loopback, outside the test settings' 127.0.0.0/8
    "http://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
])  # fmt: skip
def test_a_target_the_url_policy_refuses_fails_at_submit(fake_server, target):
    """Not accepted and then never delivered: a 422 naming fal_webhook, before anything is queued. Only IP
    literals here, so nothing is resolved and nothing is contacted."""
    with fake_server.client() as http:
        started = time.monotonic()
        response = http.post(SUBMIT, json={"prompt": "x"}, params={"fal_webhook": target})
        elapsed = time.monotonic() - started
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["query", "fal_webhook"] and item["msg"]
    assert elapsed < 2 and fake_server.store.count_queued() == 0


class SlowReceiver(Receiver):
    """Answers every POST after delay_s (the handler is threaded: each request waits on its own)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__([])
        handler = self.server.RequestHandlerClass
        original = handler.do_POST

        def slow_post(request: BaseHTTPRequestHandler) -> None:
            self.arrived.set()
            time.sleep(delay_s)
            original(request)

        self.arrived = threading.Event()
        handler.do_POST = slow_post  # type: ignore[method-assign]


def test_a_slow_receiver_delays_only_itself(fake_server, receiver_factory):
    slow = SlowReceiver(delay_s=3)
    fast = receiver_factory()
    try:
        with fake_server.client() as http:
            http.post(SUBMIT, json={"prompt": "slow", "image_size": "square"}, params={"fal_webhook": slow.url})
            assert slow.arrived.wait(10), "the slow receiver was never called"
            handle = http.post(SUBMIT, json={"prompt": "fast", "image_size": "square"},
                               params={"fal_webhook": fast.url}).json()  # fmt: skip
            submitted = time.monotonic()
            fast.wait_for(1, timeout=10)
            waited = time.monotonic() - submitted
        assert json.loads(fast.received[0][1])["request_id"] == handle["request_id"]
        assert waited < 1.5, f"the fast hook waited {waited:.1f} s behind the slow one"
    finally:
        slow.close()


def test_every_attempt_is_in_the_status_logs(fake_server, receiver_factory):
    """Attempts are log lines of the request (status?logs=1): what fal's clients already show, for every
    endpoint, with only the target's origin (its path may carry the receiver's secret)."""
    receiver = receiver_factory([503])
    with fake_server.client() as http:
        handle = http.post(SUBMIT, json={"prompt": "x", "image_size": "square"},
                           params={"fal_webhook": receiver.url}).json()  # fmt: skip
        receiver.wait_for(2)
        deadline = time.monotonic() + 5
        while True:
            logs = http.get(handle["status_url"], params={"logs": 1}).json()["logs"]
            lines = [line for line in logs if line["message"].startswith("webhook")]
            if len(lines) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    origin = receiver.url.split("/hook")[0]
    assert [line["message"] for line in lines] == [
        f"webhook attempt 1 to {origin}: HTTP 503; retrying in 0.2 s",
        f"webhook attempt 2 to {origin}: HTTP 200; delivered",
    ]
    assert [line["level"] for line in lines] == ["WARNING", "INFO"]


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


def test_the_webhook_names_the_key_that_submitted(tmp_path, fake_engine, receiver_factory):
    """fal's X-Fal-Webhook-User-Id is the submitting user: here the id of the key (its public half)."""
    server = start_live_server(make_settings(tmp_path, auth=True), fake_engine)
    try:
        keys = add_keys(server.store, "alice")
        receiver = receiver_factory()
        with server.client() as http:
            r = http.post(SUBMIT, params={"fal_webhook": receiver.url}, json={"prompt": "a cat"},
                          headers=keys["alice"])  # fmt: skip
            assert r.status_code == 200, r.text
            receiver.wait_for(1)
        key_id = keys["alice"]["authorization"].split()[1].split(":")[0]
        headers, _ = receiver.received[0]
        assert headers["x-fal-webhook-user-id"] == key_id
    finally:
        server.stop()
