"""The supervisor restarts children that die, stops everything on a config error, and passes SIGTERM on."""

from __future__ import annotations

import signal
import sys
import threading
import time

from fluxserve.supervisor import CONFIG_ERROR, Child, Supervisor


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_dies_is_restarted_until_stopped(tmp_path):
    marker = tmp_path / "starts"
    child = Child("flaky", python(f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(1)"))
    sup = Supervisor([child], sleep=lambda s: time.sleep(min(s, 0.05)))
    threading.Timer(1.5, sup.request_stop).start()
    assert sup.run() == 0
    assert child.restarts >= 2 and len(marker.read_text()) >= 3


def test_a_config_error_stops_everything(tmp_path):
    sleeper = Child("api", python("import time; time.sleep(60)"))
    broken = Child("worker", python(f"raise SystemExit({CONFIG_ERROR})"))
    sup = Supervisor([sleeper, broken], sleep=lambda s: time.sleep(0.05))
    started = time.monotonic()
    assert sup.run() == CONFIG_ERROR
    assert time.monotonic() - started < 10
    assert sleeper.process.poll() is not None, "the other children are stopped too"


def test_stop_passes_sigterm_and_waits_for_children_to_finish(tmp_path):
    done = tmp_path / "drained"
    code = (
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), pathlib.Path(%r).write_text('yes'),"
        " exit(0)))\n"
        "time.sleep(60)\n"
    ) % str(done)
    child = Child("worker", python(code))
    sup = Supervisor([child], sleep=lambda s: time.sleep(0.05))
    threading.Timer(1.0, sup.request_stop, args=(signal.SIGTERM, None)).start()
    assert sup.run() == 0
    assert done.read_text() == "yes" and child.process.returncode == 0
