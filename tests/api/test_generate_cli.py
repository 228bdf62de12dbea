"""`fluxserve generate` against a live server: progress line, images saved with their seeds, errors, Ctrl-C."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

from PIL import Image

from fluxserve.cli.generate import run_generate
from fluxserve.cli.main import build_parser


def generate(server, out, *flags):
    args = build_parser({}).parse_args(["generate", *flags, "--server", server.url, "--out", str(out)])
    err = io.StringIO()
    code = run_generate(args, out=err)
    return code, err.getvalue()


def test_images_are_saved_with_their_seeds_and_progress_is_shown(fake_server, fake_engine, tmp_path, capsys):
    fake_engine.step_s = 0.02
    tmp_path = tmp_path / "out"
    code, err = generate(fake_server, tmp_path, "a cat", "--size", "64x48", "--seed", "3", "--num-images", "2",
                         "--format", "png", "--steps", "4")  # fmt: skip
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith("-seed3.png") and files[1].endswith("-seed4.png")
    assert Image.open(tmp_path / files[0]).size == (64, 48)
    assert "step 4/4" in err and "2 image(s)" in err
    assert str(tmp_path / files[0]) in capsys.readouterr().out


def test_a_bad_field_is_one_readable_line(fake_server, tmp_path):
    code, err = generate(fake_server, tmp_path, "a cat", "--steps", "20")
    assert code == 2
    assert err.strip() == "fluxserve generate: num_inference_steps: Input should be less than or equal to 12"


def test_an_unreachable_server_is_one_line(tmp_path):
    args = build_parser({}).parse_args(["generate", "x", "--server", "http://127.0.0.1:9", "--out", str(tmp_path)])
    err = io.StringIO()
    assert run_generate(args, out=err) == 1 and "cannot reach http://127.0.0.1:9" in err.getvalue()


def test_ctrl_c_cancels_the_job_on_the_server(fake_server, fake_engine, tmp_path):
    fake_engine.gate.clear()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxserve", "generate", "a cat", "--server", fake_server.url, "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (jobs := fake_server.store._read("SELECT id FROM jobs")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        fake_engine.gate.set()
    assert proc.returncode == 130 and f"cancelled {jobs[0][0]}" in err
    assert fake_server.store.get(jobs[0][0]).status.value == "cancelled"


def test_without_a_server_an_embedded_one_is_started(tiny_model_dir, tmp_path, monkeypatch):
    import fluxserve.cli.generate as gen

    monkeypatch.setattr(gen, "DEFAULT_SERVER", "http://127.0.0.1:9")  # nothing answers there
    args = build_parser({}).parse_args(["generate", "a cat", "--size", "64x64", "--seed", "2", "--data-dir",
                                        str(tmp_path / "data"), "--model", str(tiny_model_dir),
                                        "--out", str(tmp_path / "out")])  # fmt: skip
    err = io.StringIO()
    assert run_generate(args, out=err) == 0, err.getvalue()
    assert "starting one (fluxserve serve" in err.getvalue()
    (saved,) = (tmp_path / "out").iterdir()
    assert saved.name.endswith("-seed2.jpg")
