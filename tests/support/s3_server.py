"""A real S3 server for the tests: moto's standalone server as its own process, on a free loopback port.

A separate process (not moto's in-process mocks) so boto3 and httpx talk real HTTP, as they will to MinIO or
AWS: signing, presigned URLs and headers all go over the wire. Never skipped: without moto the tests fail.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port

START_TIMEOUT_S = 20


class MotoS3Server:
    def __init__(self, log_path: Path) -> None:
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("moto.server") is None:
            pytest.fail("moto[server] is not installed: pip install -e '.[dev]'")
        self.log_path, self.port = log_path, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Output goes to a file: a pipe nobody reads would block the server once full, DEVNULL would hide why
        # a start failed.
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_ready()

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"moto server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # GET / is S3 ListBuckets; any HTTP answer means the server is serving.
                httpx.get(self.endpoint_url + "/", timeout=0.5, trust_env=False)
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"moto server did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
