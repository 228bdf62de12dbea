"""The GPU run's first 90 seconds, rehearsed on CPU: the preflight runs what can run here (versions, the
wheels' requirements, the imports, the ceilings at tiny sizes), refuses a machine with no GPU in one clear
line, and benchmarks/gpu.sh parses and stops right after a failed preflight, keeping what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT = ROOT / "benchmarks" / "gpu_preflight.py"
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def test_the_preflight_rehearses_on_cpu_without_the_packages_the_gpu_machine_lacks(tmp_path):
    # importlib_metadata is not on the GPU machine (benchmarks/gpu_machine.txt): the imports must not need it.
    code = ("import runpy, sys\nsys.modules['importlib_metadata'] = None\n"
            f"sys.argv = [{str(PREFLIGHT)!r}, '--cpu-rehearsal', '--out', {str(tmp_path)!r}]\n"
            f"runpy.run_path({str(PREFLIGHT)!r}, run_name='__main__')\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env=NO_GPU, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "preflight.json").read_text())
    assert report["failed"] is None and report["mode"] == "cpu-rehearsal"
    checks = report["checks"]
    versions = {"torch", "cudnn", "triton", "diffusers", "transformers", "torchao", "regex",
                "huggingface_hub"}  # fmt: skip
    assert versions <= set(checks["versions"])
    assert checks["requirements"]["met"]
    imports = {"diffusers", "transformers", "torchao.quantization", "fluxserve.engine.flux"}
    assert imports <= set(checks["imports"])
    assert len(checks["imports"]["fp8_configs"]) == 2
    ceilings = checks["ceilings"]
    assert ceilings["bf16_gemm"]["tflops"] > 0 and ceilings["copy"]["tb_per_s"] > 0
    # torch's CPU build runs _scaled_mm too: the call the GPU makes (layouts, scale shapes) is rehearsed.
    scaled_mm = ceilings["scaled_mm"]
    assert scaled_mm["rowwise"]["tflops"] > 0 and scaled_mm["tensorwise"]["tflops"] > 0
    for batch in ("1", "4"):
        sdpa = ceilings["sdpa"][batch]
        assert sdpa["default"]["tflops"] > 0 and sdpa["MATH"]["tflops"] > 0 and sdpa["FLASH"]["tflops"] > 0
        assert "attention" in sdpa["default_kernel"], "the kernel the default picked is named"
        assert "error" in sdpa["CUDNN"], "a backend that cannot run here is recorded, not fatal"
    assert "preflight: passed" in out.stdout


def test_without_a_gpu_the_preflight_stops_with_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, str(PREFLIGHT), "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=NO_GPU, check=False)  # fmt: skip
    assert out.returncode == 1
    failed = [line for line in out.stderr.splitlines() if "preflight FAILED" in line]
    assert len(failed) == 1, out.stderr
    assert "sees no CUDA device" in failed[0] and "--cpu-rehearsal" in failed[0]
    assert "Traceback" not in out.stdout + out.stderr
    report = json.loads((tmp_path / "preflight.json").read_text())
    assert report["failed"]["check"] == "device" and report["checks"]["versions"]["torch"]["version"]


def test_gpu_sh_parses():
    out = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_gpu_sh_stops_after_a_failed_preflight_and_keeps_its_files(tmp_path):
    # gpu.sh in a checkout of its own (no .whl/ there), this interpreter as its python3, and no GPU.
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    for name in ("gpu.sh", "gpu_preflight.py"):
        shutil.copy(ROOT / "benchmarks" / name, checkout / "benchmarks" / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # a script, not a link: the virtual environment is found from the real path
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    results = tmp_path / "results"
    env = {**NO_GPU, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(results),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # fmt: skip
    out = subprocess.run(["bash", str(checkout / "benchmarks" / "gpu.sh")], capture_output=True, text=True,
                         timeout=180, env=env, check=False)  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:]
    log = (results / "log.txt").read_text()
    assert "preflight FAILED at device" in log and "stopped after the preflight" in log
    assert "bench_engine" not in log and not (results / "engine.json").exists()
    assert sorted(p.name for p in results.iterdir()) == ["env.txt", "log.txt", "preflight.json"]
    assert "torch" in (results / "env.txt").read_text()
