"""The dispatcher sends deliveries concurrently, never more than its bound at once, and claims only what it
can start: a delivery waiting for a free slot stays in the store, unleased, for any node to take."""

from __future__ import annotations

import threading

from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.net.safe_http import Response
from fluxserve.net.webhook_dispatch import WebhookDispatcher
from fluxserve.net.webhooks import RetryPolicy, WebhookSigner
from fluxserve.processes.api_process import webhook_dispatcher
from tests.support.store_fixtures import clock, finished_with_webhook, store  # noqa: F401  (both backends)
from tests.support.waits import wait_until


class HeldReceiver:
    """Answers 200 once released; counts how many requests it holds at the same time."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.holding = self.most = self.done = 0

    def post(self, url: str, body: bytes, headers: dict) -> Response:
        with self.lock:
            self.holding += 1
            self.most = max(self.most, self.holding)
        self.release.wait(10)
        with self.lock:
            self.holding -= 1
            self.done += 1
        return Response(status_code=200, headers={}, content=b"", url=url)


def test_sends_run_concurrently_up_to_the_bound(store, clock):
    jobs = [finished_with_webhook(store) for _ in range(5)]
    receiver = HeldReceiver()
    dispatcher = WebhookDispatcher(store, receiver, WebhookSigner.generate(), RetryPolicy(timeout_s=1), clock=clock,
                                   concurrency=3)  # fmt: skip
    assert dispatcher.dispatch_due() == 3
    wait_until(lambda: receiver.holding == 3)
    assert dispatcher.dispatch_due() == 0, "no slot free: nothing more is claimed"
    assert len(store.claim_webhooks(lease_s=1)) == 2, "the other two were left unleased for anyone"
    receiver.release.set()
    assert dispatcher.wait_idle(5)
    assert receiver.most == 3 and receiver.done == 3
    clock.advance(2)  # the two claimed above by "another node" were never recorded: their leases run out
    assert dispatcher.dispatch_due() == 2 and dispatcher.wait_idle(5)
    assert receiver.done == 5
    assert all(store.webhook_attempts(job.id)[-1]["status_code"] == 200 for job in jobs)


def test_the_concurrency_flag_reaches_the_dispatcher(tmp_path, store):
    args = build_parser({}).parse_args(["api", "--data-dir", str(tmp_path), "--webhook-concurrency", "3"])
    assert webhook_dispatcher(settings_from_args(args), store).concurrency == 3
    default = build_parser({}).parse_args(["api", "--data-dir", str(tmp_path)])
    assert webhook_dispatcher(settings_from_args(default), store).concurrency == 16
