"""A daemon thread that calls one function every interval until stopped: upkeep and webhook delivery."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval_s: float, tick: Callable[[], object]) -> None:
        self.name, self.interval_s, self.tick = name, interval_s, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Idempotent; waits for a tick in progress to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # a locked database or an unreachable receiver must not end the loop for good
                log.exception("%s failed; retrying next tick", self.name)
