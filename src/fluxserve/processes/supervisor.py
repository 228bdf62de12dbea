"""`fluxserve serve`: the API and the workers as separate processes under one supervisor.

A child that dies is restarted (its job, if any, comes back through its expired lease). A child that exits
with CONFIG_ERROR (bad model folder, port in use...) would only fail again, so everything stops instead.
SIGTERM/SIGINT are passed on: the API stops accepting, each worker finishes its current job, then all exit.
Each worker on a GPU node sees only its own GPU (CUDA_VISIBLE_DEVICES in its environment).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

from fluxserve.core.settings import Settings
from fluxserve.processes.exit_codes import ExitCode
from fluxserve.processes.gpus import GpuPlanError, WorkerSlot, pinned_env, plan_workers, visible_gpus

log = logging.getLogger(__name__)

CONFIG_ERROR = ExitCode.CONFIG_ERROR
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 120.0


@dataclass
class Child:
    name: str
    argv: list[str]
    # The child's whole environment; None: the supervisor's own.
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


def worker_children(
    command: list[str], host: str, slots: list[WorkerSlot], env: Mapping[str, str]
) -> list[Child]:
    """One worker process per slot, named <host>-gpu<N> (<host>-worker-<i> on the CPU); a pinned one sees only
    its GPU and is told which it is (--gpu), so its name, logs, /ready and /metrics can say so."""
    children = []
    for slot in slots:
        worker_id = f"{host}-{slot.label}"
        argv = [*command, "--worker-id", worker_id]
        if slot.gpu is None:
            children.append(Child(worker_id, argv))
        else:
            children.append(Child(worker_id, [*argv, "--gpu", slot.gpu.id], env=pinned_env(env, slot.gpu)))
    return children


class Supervisor:
    def __init__(self, children: list[Child], sleep: Callable[[float], None] = time.sleep) -> None:
        self.children = children
        self.sleep = sleep
        self.stopping = False

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                child.start()
            code = 0
            while not self.stopping:
                code = self.check_children()
                if code:
                    break
                self.sleep(0.2)
            self.stop_children()
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def check_children(self) -> int:
        for child in self.children:
            returncode = child.process.poll() if child.process else None
            if returncode is None:
                continue
            if returncode == CONFIG_ERROR:
                log.error("%s cannot start (exit %d); stopping", child.name, returncode)
                return CONFIG_ERROR
            log.warning("%s exited with %s; restarting", child.name, returncode)
            child.restarts += 1
            self.sleep(RESTART_DELAY_S)
            child.start()
        return 0

    def stop_children(self) -> None:
        live = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in live:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check_model(settings: Settings) -> None:
    """The model folder and safety checker, checked before any process starts (no torch import)."""
    from fluxserve.engine.model_check import require_model
    from fluxserve.engine.safety import require_safety_checker

    root = require_model(settings.engine)
    if settings.engine.redux_model_path:
        from fluxserve.engine.redux import require_redux_dir

        require_redux_dir(settings.engine.redux_model_path)
    if not settings.engine.safety_disabled:
        require_safety_checker(settings.engine.safety_checker_path or root)


def serve(settings: Settings, flags: list[str], workers: str | int) -> int:
    """`fluxserve serve FLAGS`: checks the model and the signing credentials (making the development ones
    here, once, before any worker starts), then runs `api FLAGS` and one `worker FLAGS` per slot."""
    check_model(settings)
    from fluxserve.processes.worker_process import open_provenance
    from fluxserve.provenance.credentials import CredentialsError

    try:
        open_provenance(settings)
    except CredentialsError as exc:
        print(f"fluxserve: cannot start: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    found = [] if settings.engine.device == "cpu" else visible_gpus(os.environ)
    try:
        slots = plan_workers(workers, settings.gpus, found, settings.engine.device)
    except GpuPlanError as exc:
        print(f"fluxserve: cannot start: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    base = [sys.executable, "-m", "fluxserve"]
    children = [Child("api", [*base, "api", *flags])]
    children += worker_children([*base, "worker", *flags], socket.gethostname(), slots, os.environ)
    return Supervisor(children).run()
