"""The supervisor restarts children that die, stops everything on a config error, passes SIGTERM on, and
starts each worker on its own GPU."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from fluxserve.processes.gpus import plan_workers, visible_gpus
from fluxserve.processes.supervisor import CONFIG_ERROR, Child, Supervisor, worker_children


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


# A stand-in for `fluxserve worker`: writes the argv and GPU environment it was started with, then idles.
RECORD_START = (
    "import json, os, pathlib, sys, time\n"
    "args = sys.argv[1:]\n"
    "name = args[args.index('--worker-id') + 1]\n"
    "seen = {'argv': args, 'visible': os.environ.get('CUDA_VISIBLE_DEVICES'),"
    " 'order': os.environ.get('CUDA_DEVICE_ORDER'), 'path': os.environ.get('PATH')}\n"
    "pathlib.Path(%r, name).write_text(json.dumps(seen))\n"
    "time.sleep(60)\n"
)


def started_workers(tmp_path, slots) -> dict[str, dict]:
    """Run the supervisor's worker children for these slots until each has said how it was started."""
    out = tmp_path / "starts"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUDA_")}
    children = worker_children(python(RECORD_START % str(out)), "node", slots, env)
    sup = Supervisor(children, sleep=lambda s: time.sleep(0.05))

    def stop_once_all_started() -> None:
        deadline = time.monotonic() + 30
        while len(list(out.iterdir())) < len(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        sup.request_stop()

    threading.Thread(target=stop_once_all_started, daemon=True).start()
    assert sup.run() == 0
    return {path.name: json.loads(path.read_text()) for path in out.iterdir()}


def test_each_worker_sees_only_its_own_gpu_and_is_named_after_it(tmp_path):
    found = visible_gpus({}, lambda: "0, NVIDIA H200\n1, NVIDIA H200\n2, NVIDIA H200\n")
    seen = started_workers(tmp_path, plan_workers("auto", (), found, "auto"))
    assert sorted(seen) == ["node-gpu0", "node-gpu1", "node-gpu2"]
    for index in "012":
        child = seen[f"node-gpu{index}"]
        assert child["visible"] == index and child["order"] == "PCI_BUS_ID"
        assert child["argv"][-4:] == ["--worker-id", f"node-gpu{index}", "--gpu", index]
        assert child["path"] == os.environ["PATH"], "the rest of the environment is passed on"


def test_an_explicit_gpu_list_starts_one_worker_on_each(tmp_path):
    found = visible_gpus({}, lambda: "".join(f"{i}, NVIDIA H200\n" for i in range(4)))
    seen = started_workers(tmp_path, plan_workers("auto", ("1", "3"), found, "auto"))
    assert {name: child["visible"] for name, child in seen.items()} == {"node-gpu1": "1", "node-gpu3": "3"}


def test_workers_without_a_gpu_keep_their_numbered_names_and_the_environment(tmp_path):
    seen = started_workers(tmp_path, plan_workers(2, (), [], "auto"))
    assert sorted(seen) == ["node-worker-0", "node-worker-1"]
    assert all(child["visible"] is None and "--gpu" not in child["argv"] for child in seen.values())
