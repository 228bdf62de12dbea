"""One way to wait for something in a test: poll a predicate until it holds, failing at a deadline of its own
(never leaning on pytest's whole-test timeout, which would report a hang instead of what was awaited)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", every: float = 0.01
) -> T:
    """The predicate's first truthy value; an AssertionError naming `what` once `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)
    return value


def wait_status(
    http: Any, handle: dict, status: str = "COMPLETED", timeout: float = 20, headers: dict | None = None,
    **params: Any,
) -> dict:
    """The status body once a queued request reports `status` (params: the status URL's query: logs="1")."""

    def reached() -> dict | None:
        body = http.get(handle["status_url"], params=params, headers=headers).json()
        return body if body["status"] == status else None

    return wait_until(reached, timeout, f"{handle['status_url']} to be {status}")


def wait_result(http: Any, handle: dict, timeout: float = 60, headers: dict | None = None) -> Any:
    """The response of a queued request's response_url once it has one (fal answers 400 while it runs)."""

    def ended() -> Any:
        response = http.get(handle["response_url"], headers=headers)
        return response if response.status_code != 400 else None

    return wait_until(ended, timeout, f"{handle['response_url']} to answer")
