"""Real fluxserve processes for the durability tests: start, read their output, kill, restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port


class Proc:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, marker: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {marker!r} in:\n{self.output}"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


class Cluster:
    """One data folder; API and worker processes started and killed at will."""

    def __init__(self, data_dir: Path, model: Path, *flags: str) -> None:
        self.data_dir, self.model, self.flags = data_dir, model, list(flags)
        self.port = free_port()
        self.procs: list[Proc] = []

    def common(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--model", str(self.model), "--device", "cpu",
                "--port", str(self.port), "--tls-port", "0", "--warmup", "off", *self.flags]  # fmt: skip

    def start_api(self) -> Proc:
        proc = Proc([sys.executable, "-m", "fluxserve", "api", *self.common()])
        self.procs.append(proc)
        proc.wait_for_line("run endpoint")
        return proc

    def start_worker(self, name: str) -> Proc:
        proc = Proc([sys.executable, "-m", "fluxserve", "worker", *self.common(), "--worker-id", name])
        self.procs.append(proc)
        proc.wait_for_line(f"worker {name} ready")
        return proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.process.poll() is None:
                proc.kill()
