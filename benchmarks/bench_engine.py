"""Engine benchmark: stock diffusers FluxPipeline (the baseline) and fluxserve at each acceleration level, measured
in the same run on the same weights, end to end inside the worker (encode text, denoise, decode, safety, JPEG).

    # CPU, tiny model (what `make test` smoke-runs):
    .venv/bin/python benchmarks/bench_engine.py --model data/models/flux-schnell-tiny --sizes 512,1024
    # GPU, full size, random weights (benchmarks/gpu.sh does this in one command):
    python benchmarks/bench_engine.py --random-full-size --device cuda

Prints a Markdown table (ratios to the baseline and absolute seconds, per stage) and writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from fluxserve.config import EngineSettings  # noqa: E402
from fluxserve.engine.accel import LEVELS, Accelerator, AccelSettings  # noqa: E402
from fluxserve.engine.loading import Placement, quiet_libraries  # noqa: E402
from fluxserve.engine.pipeline import MAX_SEQUENCE_LENGTH, FluxEngine  # noqa: E402
from fluxserve.engine.safety import SafetyChecker  # noqa: E402
from fluxserve.engine.seeds import generators  # noqa: E402
from fluxserve.jobs import GenerationSpec  # noqa: E402

PROMPT = "a red fox in the snow, morning light"
CALLS = iter(range(10**9))


def fresh_prompt() -> str:
    """A new prompt per call: the text-embedding cache never hits, so no variant is flattered by it."""
    return f"{PROMPT} #{next(CALLS)}"


def spec(size: int, level: str, steps: int, seed: int = 0) -> GenerationSpec:
    return GenerationSpec(kind="text", prompt=fresh_prompt(), width=size, height=size, num_inference_steps=steps, seed=seed,
                          num_images=1, guidance_scale=3.5, enable_safety_checker=True, output_format="jpeg",
                          sync_mode=False, acceleration=level, base_url="")  # fmt: skip


def jpeg(images: list[Any]) -> float:
    started = time.perf_counter()
    for image in images:
        image.save(io.BytesIO(), format="JPEG", quality=95)
    return time.perf_counter() - started


def synchronize(engine: FluxEngine) -> None:
    if engine.placement.device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_baseline(engine: FluxEngine, size: int, batch: int, steps: int) -> dict[str, float]:
    """Stock diffusers: FluxPipeline.__call__ on the same modules with every fluxserve switch off."""
    from diffusers import FluxPipeline

    stock = FluxPipeline(**engine.pipe.components)
    stock.set_progress_bar_config(disable=True)
    with engine.accel.level("none", engine):
        started = time.perf_counter()
        images = stock(prompt=[fresh_prompt() for _ in range(batch)], width=size, height=size, num_inference_steps=steps,
                       guidance_scale=0.0, generator=generators(list(range(batch))),
                       max_sequence_length=MAX_SEQUENCE_LENGTH).images  # fmt: skip
        synchronize(engine)
        pipeline = time.perf_counter() - started
        started = time.perf_counter()
        if engine.safety:
            engine.safety.check(images)
        safety = time.perf_counter() - started
    encode = jpeg(images)
    return {"pipeline": pipeline, "safety": safety, "encode": encode, "total": pipeline + safety + encode}


def run_level(engine: FluxEngine, size: int, batch: int, steps: int, level: str) -> dict[str, float]:
    """fluxserve: one generate_batch of `batch` jobs, as the worker runs them (level none runs jobs one by one)."""
    specs = [spec(size, level, steps, seed) for seed in range(batch)]
    groups = [[s] for s in specs] if level == "none" else [specs]
    stages: dict[str, float] = {"encode": 0.0}
    started = time.perf_counter()
    for group in groups:
        results = engine.generate_batch(group)
        for name, seconds in results[0].timings.items():  # a batch's stage timings are shared by its jobs
            stages[name] = stages.get(name, 0.0) + seconds
        stages["encode"] += jpeg([image for result in results for image in result.images])
    synchronize(engine)
    stages["total"] = time.perf_counter() - started
    return stages


QUALITY_PROMPTS = ("a red fox in the snow", "a city street at night, neon signs", "a bowl of fruit on a table",
                   "portrait of an old fisherman, film photo")  # fmt: skip


def quality(engine: FluxEngine, size: int, steps: int, levels: list[str]) -> dict[str, dict[str, float]]:
    """Each level against `none` on a fixed prompt set, same seeds: mean absolute pixel difference (0-255) and
    PSNR. (A learned perceptual metric such as LPIPS needs downloaded weights; not available offline.)"""
    import numpy as np

    def images(level: str) -> list[Any]:
        specs = [dataclasses.replace(spec(size, level, steps, seed=i), prompt=p) for i, p in enumerate(QUALITY_PROMPTS)]
        return [np.asarray(r.images[0], dtype=np.float64) for r in (engine.generate(s) for s in specs)]

    reference = images("none")
    report = {}
    for level in levels:
        diffs = [np.abs(a - b) for a, b in zip(images(level), reference)]
        mse = float(np.mean([np.mean(d**2) for d in diffs]))
        report[level] = {"mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
                         "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)}  # fmt: skip
    return report


def median_run(fn: Any, repeats: int, warmups: int) -> dict[str, float]:
    for _ in range(warmups):
        fn()
    runs = [fn() for _ in range(repeats)]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def load_engine(args: argparse.Namespace) -> FluxEngine:
    quiet_libraries()
    accel = AccelSettings(compile=args.compile, fp8=args.fp8)
    if args.random_full_size:
        import torch

        from benchmarks.random_flux import full_size_pipeline

        placement = Placement(args.device, "bfloat16")
        pipe, checker, extractor = full_size_pipeline(args.device, torch.bfloat16)
        engine = FluxEngine(pipe=pipe, safety=SafetyChecker(checker, extractor, placement), placement=placement)
        engine.accel = Accelerator.prepare(engine, accel)
        return engine
    settings = EngineSettings(model_path=Path(args.model), device=args.device, dtype=args.dtype,
                              compile=args.compile, fp8=args.fp8)  # fmt: skip
    return FluxEngine.load(settings)


def peak_memory_gb(engine: FluxEngine) -> float | None:
    if engine.placement.device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def measure(engine: FluxEngine, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            base = median_run(lambda: run_baseline(engine, size, batch, args.steps), args.repeats, args.warmups)
            rows.append({"size": size, "batch": batch, "variant": "diffusers (baseline)", **base, "ratio": 1.0})
            for level in args.levels:
                result = median_run(lambda: run_level(engine, size, batch, args.steps, level), args.repeats,
                                    args.warmups)  # fmt: skip
                rows.append({"size": size, "batch": batch, "variant": f"fluxserve {level}", **result,
                             "ratio": base["total"] / result["total"]})  # fmt: skip
                print(rows[-1], file=sys.stderr)
    return rows


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    stages = ["pipeline", "text_encode", "denoise", "decode", "safety", "encode"]
    lines = [header, "", "| size | batch | variant | total s | per image s | speed-up | "
             + " | ".join(stages) + " |", "|---|---|---|---|---|---|" + "---|" * len(stages)]  # fmt: skip
    for r in rows:
        cells = [f"{r[s]:.3f}" if s in r else "" for s in stages]
        lines.append(f"| {r['size']}² | {r['batch']} | {r['variant']} | {r['total']:.3f} | "
                     f"{r['total'] / r['batch']:.3f} | {r['ratio']:.2f}× | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="data/models/flux-schnell-tiny")
    parser.add_argument("--random-full-size", action="store_true", help="full-size random weights on --device")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sizes", default="512,1024", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--batches", default="1,4", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--levels", default=",".join(LEVELS), type=lambda v: v.split(","))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--fp8", default="auto")
    parser.add_argument("--out", default="benchmarks/results", help="folder for engine.json and engine.md")
    args = parser.parse_args()
    engine = load_engine(args)
    rows = measure(engine, args)
    fidelity = quality(engine, min(args.sizes), args.steps, args.levels)
    import torch

    device = torch.cuda.get_device_name() if engine.placement.device == "cuda" else platform.processor() or "cpu"
    header = (f"{time.strftime('%Y-%m-%d')}, {device}, torch {torch.__version__}, {args.steps} steps, "
              f"{'full-size random weights' if args.random_full_size else args.model}, "
              f"skipped: {engine.accel.skipped or 'nothing'}, peak GPU memory: {peak_memory_gb(engine)}")  # fmt: skip
    table = markdown(rows, header) + "\n\nFidelity against `none` (same prompts and seeds, " + \
        f"{min(args.sizes)}², {len(QUALITY_PROMPTS)} prompts):\n\n| level | mean abs diff (0-255) | PSNR dB |\n|---|---|---|\n" + \
        "\n".join(f"| {lvl} | {q['mean_abs_diff']:.3f} | {q['psnr_db']:.1f} |" for lvl, q in fidelity.items())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps({"header": header, "rows": rows, "fidelity": fidelity}, indent=2))
    (out / "engine.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
