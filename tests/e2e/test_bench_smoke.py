"""The engine benchmark runs (tiny sizes) and reports every variant against the baseline of the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_engine_smoke(tiny_model_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--model", str(tiny_model_dir),
         "--sizes", "64", "--batches", "1,2", "--repeats", "1", "--warmups", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "engine.json").read_text())
    variants = [(r["batch"], r["variant"]) for r in report["rows"]]
    for batch in (1, 2):
        for variant in ("diffusers (baseline)", "fluxserve none", "fluxserve regular", "fluxserve high"):
            assert (batch, variant) in variants
    assert all(r["total"] > 0 and r["ratio"] > 0 for r in report["rows"])
    assert "| 64² | 2 | fluxserve regular |" in (tmp_path / "engine.md").read_text()
    assert "compile" in report["header"], "the skipped optimisations are stated"
    assert report["fidelity"]["none"]["mean_abs_diff"] == 0.0, "none against itself: the exact level"
    assert report["fidelity"]["regular"]["mean_abs_diff"] < 2.0
