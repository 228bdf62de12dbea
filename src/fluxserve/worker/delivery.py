"""The delivery thread: encodes and stores a batch's images and records each job's end while the loop runs
the next batch on the engine, so the GPU never waits on JPEG encoding or the blob store."""

from __future__ import annotations

import threading
from typing import Callable

from fluxserve.worker.batch import Batch


class Deliveries:
    """Delivers batches in order on a background thread, one at a time. Handing over a batch waits for the
    previous delivery to end, so at most one batch waits (memory stays bounded) and a slow blob store slows
    the loop down instead of piling up images."""

    def __init__(self, deliver: Callable[[Batch], None]) -> None:
        self._deliver = deliver
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def hand_off(self, batch: Batch) -> None:
        try:
            self.drain()
        except BaseException:
            batch.keeper.stop()  # the worker is going down: leave this batch to its leases
            raise
        self._thread = threading.Thread(target=self._run, args=(batch,), name="delivery", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Wait for the delivery in flight; what broke it (the store gone...) is raised here, as if inline."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self, batch: Batch) -> None:
        try:
            self._deliver(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which stops on it
            self._failure = exc
