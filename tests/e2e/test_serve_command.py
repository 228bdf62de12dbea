"""`fluxserve serve` as a user runs it: prints where it listens, answers, and stops cleanly on a signal."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading

import httpx

from tests.support.ports import free_port


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    """Lines printed until one contains marker; a reader thread keeps a silent process from hanging us."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen = []
    while not seen or marker not in seen[-1]:
        try:
            seen.append(lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError("no %r in output:\n%s" % (marker, "".join(seen))) from None
    return "".join(seen)


def test_serve_prints_urls_answers_and_stops_on_sigterm(tiny_model_dir, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxserve", "serve", "--port", "0", "--tls-port", str(free_port()),
         "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu", "--warmup", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        banner = read_until(proc, "SSL_CERT_FILE")
        run_url = re.search(r"run endpoint\s+(\S+)", banner).group(1)
        assert re.search(r"export FAL_RUN_HOST=127\.0\.0\.1:\d+", banner)
        assert re.search(r"export FAL_QUEUE_RUN_HOST=127\.0\.0\.1:\d+/queue", banner)
        assert f"export SSL_CERT_FILE={tmp_path.resolve()}/tls/cert.pem" in banner
        r = httpx.post(run_url, json={"prompt": "a cat", "image_size": {"width": 64, "height": 64}}, timeout=60)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


def test_worker_logs_what_it_loaded(tiny_model_dir, tiny_redux_dir, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxserve", "worker", "--data-dir", str(tmp_path), "--model", str(tiny_model_dir),
         "--redux-model", str(tiny_redux_dir), "--device", "cpu", "--worker-id", "w1", "--warmup", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = read_until(proc, "worker w1 ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "image_encoder", "image_embedder"):
        assert re.search(rf"loaded {name}\s+\w+ from \S+: float32, [\d.]+M parameters, \d+ MB, on cpu", out), name
    assert "Redux weights licence: FLUX.1 [dev] Non-Commercial License" in out
    assert "loaded safety checker" in out
