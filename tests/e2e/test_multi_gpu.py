"""`fluxserve serve` on a node with several GPUs: one worker per GPU, each seeing only its own, saying which.

The GPUs are given through CUDA_VISIBLE_DEVICES, as an operator (or a scheduler) would. Their indices are ones
no test machine has, so torch in each worker sees no usable GPU and, with --device auto, runs on the CPU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx

from tests.support.procs import Proc, free_port

GPUS = "14,15"


def serve(model, data_dir, *flags: str) -> list[str]:
    return ["env", f"CUDA_VISIBLE_DEVICES={GPUS}", sys.executable, "-m", "fluxserve", "serve",
            "--data-dir", str(data_dir), "--model", str(model), "--warmup", "off", *flags]  # fmt: skip


def test_serve_starts_one_worker_per_visible_gpu_and_each_says_which(tiny_model_dir, tmp_path):
    port = free_port()
    proc = Proc(serve(tiny_model_dir, tmp_path, "--port", str(port), "--tls-port", "0"))
    host = socket.gethostname()
    try:
        for gpu in GPUS.split(","):
            proc.wait_for_line(f"worker {host}-gpu{gpu} ready on GPU {gpu} (cpu)", timeout=240)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            ready = http.get("/ready").json()
            body = {"prompt": "a cat", "image_size": {"width": 64, "height": 64}}
            r = http.post("/fal-ai/flux/schnell", json=body)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
    finally:
        code = proc.terminate()
    assert code == 0, proc.output
    assert ready["workers"] == {f"{host}-gpu14": "ready", f"{host}-gpu15": "ready"}
    for gpu in ("14", "15"):
        details = ready["worker_details"][f"{host}-gpu{gpu}"]
        assert details["gpu"] == gpu and details["device"] == "cpu", details
    warning = f"worker {host}-gpu14 was given GPU 14, but torch sees no usable CUDA device: it runs on CPU"
    assert warning in proc.output


def test_serve_refuses_more_workers_than_gpus_before_starting_anything(tiny_model_dir, tmp_path):
    env = {**os.environ, "FLUXSERVE_PORT": str(free_port())}
    done = subprocess.run(serve(tiny_model_dir, tmp_path, "--workers", "3"), capture_output=True, text=True,
                          timeout=60, check=False, env=env)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot start: --workers 3: this node has 2 visible GPU(s) (14, 15)" in done.stderr
    assert "run endpoint" not in done.stdout, "no process was started"
