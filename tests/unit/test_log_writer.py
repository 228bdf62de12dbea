"""The step log writer: the engine's thread never waits for the store; lines keep their order, coalesce
while a write is in flight, survive a failed write, and what is unwritten when the batch ends is handed back
(for the job's end to carry). Closed again and again, it stays closed."""

from __future__ import annotations

import threading

from fluxserve.core.jobs import LogLine
from fluxserve.worker.log_writer import LogWriter
from tests.support.waits import wait_until


def line(n: int) -> list[tuple[str, LogLine]]:
    return [("job", LogLine(message=f"step {n}", timestamp=float(n)))]


class SlowStore:
    """append_logs that holds each write until released; `fail` makes the next writes raise."""

    def __init__(self) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        self.writes: list[list[str]] = []
        self.fail = False

    def append_logs(self, entries) -> None:
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("the store is locked")
        self.writes.append([entry.message for _, entry in entries])


def test_put_never_waits_and_lines_coalesce_in_order_behind_the_write_in_flight():
    store = SlowStore()
    writer = LogWriter(store.append_logs)
    writer.put(line(1))
    assert store.entered.wait(5)  # the first write is in flight, held by the store
    for n in (2, 3, 4):
        writer.put(line(n))  # returns at once though the store is stuck
    store.release.set()
    wait_until(lambda: sum(map(len, store.writes)) == 4, what="every line written")
    assert store.writes == [["step 1"], ["step 2", "step 3", "step 4"]]
    assert writer.close() == [] and writer.close() == []


def test_a_failed_write_keeps_its_lines_and_close_hands_back_what_is_unwritten():
    store = SlowStore()
    store.fail = True
    writer = LogWriter(store.append_logs)
    writer.put(line(1))
    assert store.entered.wait(5)
    writer.put(line(2))
    store.release.set()  # the write fails: its line goes back in front of the pending one
    left = writer.close()
    assert [entry.message for _, entry in left] == ["step 1", "step 2"], "in order, nothing lost"
    assert store.writes == []


def test_close_waits_for_the_write_in_flight_and_returns_the_rest():
    store = SlowStore()
    writer = LogWriter(store.append_logs)
    writer.put(line(1))
    assert store.entered.wait(5)
    writer.put(line(2))
    closer = threading.Thread(target=lambda: closed.append(writer.close()))
    closed: list = []
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close waits for the write in flight (the job's end must come after it)"
    store.release.set()
    closer.join(5)
    assert store.writes == [["step 1"]]
    assert [entry.message for _, entry in closed[0]] == ["step 2"]


def test_nothing_reported_starts_no_thread():
    writer = LogWriter(lambda entries: None)
    writer.put([])
    assert writer.close() == [] and writer._thread is None
