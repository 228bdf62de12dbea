"""The engine benchmark on the tiny model: every variant against the stock baseline of the same run, per
stage; the stock baseline only ever runs the eager modules; a level that fails is measured without its
riskiest switch; a fresh clone needs no flags; rows that would pass the deadline are written as skipped; every
result file is valid after every row. And the full-size engine the GPU run builds constructs (on the meta
device, in seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_engine.py"
VARIANTS = ("diffusers (baseline)", "fluxserve none", "fluxserve regular", "fluxserve high")


def test_bench_engine_smoke(tiny_model_dir, tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--model", str(tiny_model_dir), "--sizes", "64", "--batches", "1,2",
         "--repeats", "1", "--warmups", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "engine.json").read_text())
    variants = [(r["batch"], r["variant"]) for r in report["rows"]]
    for batch in (1, 2):
        for variant in VARIANTS:
            assert (batch, variant) in variants
    assert all(r["total"] > 0 and r["ratio"] > 0 for r in report["rows"])
    for row in report["rows"]:
        stages = row["stages"]
        assert {"text_encode", "denoise", "safety", "encode"} <= set(stages), row
        assert "vae_decode" in stages or "decode" in stages, row
    assert "| 64² | 2 | fluxserve regular |" in (tmp_path / "engine.md").read_text()
    assert "compile" in report["header"], "the skipped optimisations are stated"
    fidelity = report["fidelity"]
    assert fidelity["label"] == "random weights: numerical deviation, not image quality"
    assert fidelity["levels"]["none"]["mean_abs_diff"] == 0.0, "none against itself: the exact level"
    assert fidelity["levels"]["regular"]["mean_abs_diff"] < 2.0
    kernels = json.loads((tmp_path / "kernels.json").read_text())["levels"]
    assert set(kernels) == {"none", "regular", "high"}
    assert all(k["gemm"] and "attention" in k["attention"] and len(k["top"]) == 15 for k in kernels.values())
    assert len(list(tmp_path.iterdir())) <= 8, "the GPU machine returns at most 8 files"


def test_the_stock_baseline_runs_the_eager_modules_whatever_level_ran_before(tiny_model_dir, monkeypatch):
    from benchmarks.bench_engine import StockPipeline, engine_from, module_state

    from fluxserve.engine.accel import AccelSettings
    from fluxserve.engine.loading import load_flux_pipeline
    from fluxserve.engine.placement import resolve_placement
    from fluxserve.engine.safety import SafetyChecker
    from fluxserve.engine.switches import CudaGraphs, Float8
    from tests.support.fp8_fakes import FakeGraphFactory, fake_quantise

    # Every switch of the GPU path, on CPU: an fp8 twin (fake quantiser), compiled blocks (a CPU backend: were
    # the stock run to reach one, it would fail in seconds), and a CUDA-graph wrapper (fake graphs).
    monkeypatch.setattr(Float8, "quantise", staticmethod(fake_quantise))
    monkeypatch.setattr(CudaGraphs, "graph_factory", FakeGraphFactory(), raising=False)
    placement = resolve_placement("cpu", "auto")
    accel = AccelSettings(compile="on", compile_backend="aot_eager", fp8="on")
    pipe = load_flux_pipeline(tiny_model_dir, placement)
    engine = engine_from(pipe, SafetyChecker.load(tiny_model_dir, placement), placement, accel)
    with engine.accel.level("none", engine):
        eager = engine.pipe.transformer
    stock = StockPipeline(engine)
    for level in ("high", "regular", "none", "high"):
        with engine.accel.level(level, engine):
            left_behind = module_state(engine.pipe.transformer, engine.pipe.vae)
        assert left_behind["eager"] is (level == "none"), f"{level} switches something: {left_behind}"
        stock.run(32, 1, 1)
        assert stock.called == {id(eager)}, f"after {level}: stock called another transformer"
        state = stock.state()
        assert state["eager"] and state["transformer"] == type(eager).__name__, f"after {level}: {state}"


def test_a_level_that_fails_is_measured_without_its_riskiest_switch(tiny_model_dir, tmp_path):
    import argparse

    from benchmarks.bench_engine import Bench, Deadline, Results, StockPipeline, engine_from, run_meta

    from fluxserve.engine.accel import AccelSettings
    from fluxserve.engine.loading import load_flux_pipeline
    from fluxserve.engine.placement import resolve_placement
    from fluxserve.engine.safety import SafetyChecker

    def no_kernels(graph, example_inputs):  # a compile that fails on first contact, as a broken stack would
        raise RuntimeError("no kernel for this device")

    placement = resolve_placement("cpu", "auto")
    pipe = load_flux_pipeline(tiny_model_dir, placement)
    engine = engine_from(pipe, SafetyChecker.load(tiny_model_dir, placement), placement,
                         AccelSettings(compile="on", compile_backend=no_kernels))  # fmt: skip
    args = argparse.Namespace(levels=["regular"], warmups=0, repeats=1, steps=1, device="cpu",
                              deadline_s=None, random_full_size=False)  # fmt: skip
    results = Results(out=tmp_path, meta={**run_meta(args), "model": str(tiny_model_dir)})
    Bench(engine, StockPipeline(engine), args, Deadline(None), results).variant(32, 1, "regular")
    row = json.loads((tmp_path / "engine.json").read_text())["rows"][0]
    assert row["dropped"] == ["compile"] and row["total"] > 0 and "compile" not in row["runs_with"], row
    assert "dropped after failing: compile" in (tmp_path / "engine.md").read_text()


@pytest.fixture(scope="module")
def fresh_clone_run(tmp_path_factory) -> dict:
    """The bench with no --model from a folder with no data/, a size that cannot fit the deadline, and
    engine.json read every few milliseconds while it runs."""
    cwd = tmp_path_factory.mktemp("fresh-clone")
    out = cwd / "results"
    argv = [sys.executable, str(BENCH), "--sizes", "64,4096", "--batches", "1", "--levels", "none,regular",
            "--repeats", "1", "--warmups", "0", "--deadline-s", "120", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    snapshots, unreadable, last = [], [], None
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        path = out / "engine.json"
        text = path.read_text() if path.is_file() else None
        if text is not None and text != last:
            last = text
            try:
                snapshots.append(json.loads(text))
            except ValueError as exc:
                unreadable.append(str(exc))
        time.sleep(0.01)
    if process.poll() is None:
        process.kill()
    output = process.communicate()[0]
    assert process.returncode == 0, output[-3000:]
    return {"out": out, "snapshots": snapshots, "unreadable": unreadable,
            "report": json.loads((out / "engine.json").read_text())}  # fmt: skip


def test_with_no_model_the_bench_builds_the_tiny_model(fresh_clone_run):
    out, report = fresh_clone_run["out"], fresh_clone_run["report"]
    assert Path(report["meta"]["model"]).resolve() == (out / "tiny-model").resolve()
    assert (out / "tiny-model" / "model_index.json").is_file()
    assert [r["variant"] for r in report["rows"] if r["size"] == 64 and "total" in r] == \
        ["diffusers (baseline)", "fluxserve none", "fluxserve regular"]  # fmt: skip


def test_rows_that_would_pass_the_deadline_are_written_as_skipped(fresh_clone_run):
    report = fresh_clone_run["report"]
    late = [r for r in report["rows"] if r["size"] == 4096]
    assert len(late) == 3 and all(r["skipped"] == "deadline" and r["estimate_s"] > r["left_s"] for r in late)
    table = (fresh_clone_run["out"] / "engine.md").read_text()
    assert "| 4096² | 1 | fluxserve none | skipped: deadline" in table


def test_every_result_file_is_rewritten_after_each_row(fresh_clone_run):
    assert not fresh_clone_run["unreadable"], "a reader never sees half a file"
    counts = [len(s["rows"]) for s in fresh_clone_run["snapshots"]]
    final = len(fresh_clone_run["report"]["rows"])
    assert counts == sorted(counts), "rows are only ever added"
    assert {1, 2} <= set(counts) and final > 2, f"written row by row while running, not at the end: {counts}"
    assert json.loads((fresh_clone_run["out"] / "kernels.json").read_text())["levels"]


def test_the_full_size_engine_the_gpu_run_builds_constructs_on_the_meta_device():
    """The bench's own --random-full-size path (random_flux, the engine over it, the stock pipeline), with
    every constructor argument checked in seconds and no memory: on the GPU it must not fail first."""
    import argparse

    import torch
    from benchmarks.bench_engine import StockPipeline, load_engine

    from fluxserve.engine.accel import AccelSettings

    args = argparse.Namespace(random_full_size=True, device="meta", model=None, dtype="auto", out="unused")
    started = time.monotonic()
    engine, model = load_engine(args, AccelSettings())
    stock = StockPipeline(engine)
    assert time.monotonic() - started < 60 and model == "full-size random weights"

    def billions(module, fused: bool = False) -> float:
        return sum(p.numel() for n, p in module.named_parameters() if ("qkv" in n) is fused) / 1e9

    transformer = engine.pipe.transformer
    assert 11.85 < billions(transformer) < 11.95, "FLUX.1's 11.9B transformer"
    assert 2.1 < billions(transformer, fused=True) < 2.2, "fused QKV keeps the separate projections beside it"
    assert 4.75 < billions(engine.pipe.text_encoder_2) < 4.77, "T5-XXL's 4.76B encoder"
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in transformer.parameters())
    assert 0.29 < billions(engine.safety.checker) < 0.31, "the safety checker's CLIP ViT-L/14"
    assert engine.safety.feature_extractor.crop_size == {"height": 224, "width": 224}
    assert stock.pipe.transformer is transformer and stock.state()["eager"]


def test_bench_api_quick_reports_every_scenario_with_numbers(tmp_path):
    """`bench_api.py --quick`: the ceiling, then status (polled and saturated), result, submit (paced and
    saturated) and sync run on both stores at each depth with and without a worker generating, two API nodes
    on Redis; every row has figures, and the Markdown has a table line per row and a verdict per target."""
    bench = ROOT / "benchmarks" / "bench_api.py"
    out = subprocess.run([sys.executable, str(bench), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "api.json").read_text())
    depths = report["meta"]["plan"]["depths"]
    expected = {("none", 0, False, "ceiling", 1, load) for load in ("poll", "saturate")}
    for store in ("sqlite", "redis"):
        expected.add((store, 0, False, "run", 1, "sequential"))
        for depth in depths:
            for worker in (False, True):
                expected |= {(store, depth, worker, op, 1, load) for op, load in
                             (("status", "poll"), ("status", "saturate"), ("result", "saturate"),
                              ("submit", "paced"), ("submit", "saturate"))}  # fmt: skip
    expected.add(("redis", depths[-1], True, "status", 2, "saturate"))
    rows = report["rows"]
    assert sorted((r["store"], r["depth"], r["worker"], r["op"], r["nodes"], r["load"]) for r in rows) == \
        sorted(expected), "each scenario exactly once"  # fmt: skip
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert min(row["p50_ms"], row["p99_ms"], row["per_s"], row["server_cpu_ms_per_request"]) > 0, row
        assert row["load"] != "saturate" or row["ratio_to_ceiling"] > 0, row
    runs = [r for r in rows if r["op"] == "run"]
    assert all(r["engine_ms"] > 0 and r["overhead_p50_ms"] == r["p50_ms"] - r["engine_ms"] for r in runs)
    polled = [r for r in rows if r["op"] == "status" and r["load"] == "poll" and r["depth"]]
    queued = [r for r in polled if not r["worker"]]
    assert queued and all(r["queue_position"] == r["depth"] - 1 for r in queued), "the queue's tail is polled"
    generating = [r for r in polled if r["worker"]]
    assert generating and all(json.loads(r["last_body"])["status"] == "IN_QUEUE" for r in generating), \
        "the worker never drains the backlog"  # fmt: skip
    meta = report["meta"]
    assert meta["machine"]["cpus"] and meta["machine"]["python"] and meta["machine"]["versions"]["fastapi"]
    assert meta["commit"] and report["generator"]["client_cpu_ms_per_request"] > 0
    table = (tmp_path / "api.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ") and "scenario" not in line]
    assert len(lines) == len(rows)
    assert all(float(cell) >= 0 for line in lines for cell in line.strip("|").split("|")[1:5]), lines
    assert len([line for line in table.splitlines() if line.startswith("- ") and "met" in line]) == 4
    assert "Scaling rule: one API core serves about" in table


def test_bench_provenance_smoke(tmp_path):
    """Each mark timed against the image's own encoding, and the watermark's survival, in one short run."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_provenance.py"), "--size", "512", "--repeats", "1",
         "--images", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "provenance.json").read_text())
    assert [row["format"] for row in report["timings"]] == ["jpeg", "png", "webp"]
    for row in report["timings"]:
        for mark in ("encode (baseline)", "watermark", "c2pa", "stage (all marks)"):
            assert row[mark]["median_ms"] > 0, (row["format"], mark)
    assert report["robustness"]["survival"]["jpeg q75 (required)"] == 1.0
    assert "| jpeg q75 (required) | 100% |" in (tmp_path / "provenance.md").read_text()
