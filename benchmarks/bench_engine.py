"""Engine benchmark: stock diffusers FluxPipeline (the baseline) and fluxserve at each acceleration level,
measured in the same run on the same weights, end to end inside the worker, per stage (text encode, denoise,
VAE decode, to image, safety, JPEG encode).

    # CPU, the tiny model (found in data/models/flux-schnell-tiny, else built once into <out>/tiny-model):
    .venv/bin/python benchmarks/bench_engine.py
    # GPU, full size, random weights, within a deadline (benchmarks/gpu.sh runs this in one command):
    python benchmarks/bench_engine.py --random-full-size --device cuda --sizes 1024 --deadline-s 420

Results go to --out as they are measured: engine.json, engine.md and kernels.json are rewritten after every
row, so a run stopped at any moment leaves everything it measured. With --deadline-s, each variant is first
estimated from what the run has seen so far, and one that would not finish in time is written as skipped.

Order: for the first batch size, every size's rows (stock, then each level); a one-step profile per level (the
kernels that ran: kernels.json); fidelity against `none`; the other batch sizes; then a restart probe (compile
again with a warm inductor cache). The stock pipeline is built once, at the start, from the modules as they
are at level `none`, and only runs at `none`: no compiled, fused or fp8 module a fluxserve level switches in
reaches it.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The deadline counts from here: loading the model is part of the time a run has.
STARTED = time.monotonic()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_preflight import profiled, top_kernels  # noqa: E402

from fluxserve.core.jobs import GenerationSpec  # noqa: E402
from fluxserve.core.settings import TINY_MODEL_SUBDIR  # noqa: E402
from fluxserve.engine.accel import LEVELS, AccelSettings  # noqa: E402
from fluxserve.engine.flux import FluxEngine  # noqa: E402
from fluxserve.engine.loading import load_flux_pipeline, quiet_libraries  # noqa: E402
from fluxserve.engine.model_check import require_model_dir  # noqa: E402
from fluxserve.engine.placement import Placement, resolve_placement  # noqa: E402
from fluxserve.engine.safety import SafetyChecker  # noqa: E402
from fluxserve.engine.sampling import MAX_SEQUENCE_LENGTH, generators  # noqa: E402

STOCK = "diffusers (baseline)"
PROMPT = "a red fox in the snow, morning light"
FIDELITY_PROMPTS = ("a red fox in the snow", "a city street at night, neon signs")
FIDELITY_LABEL = "random weights: numerical deviation, not image quality"
# Stage columns in this order; a stage the engine reports that is not listed here comes after them.
STAGES = ("text_encode", "image_encode", "denoise", "vae_decode", "decode", "to_image", "safety", "inference",
          "encode")  # fmt: skip
# Before any compile was seen: regional default-mode compile of the transformer blocks plus the VAE decoder,
# per shape, on an H100-class GPU (gpu-engine-notes §8a: 15-25 s + 20-40 s); inductor on CPU takes as long.
COMPILE_PRIOR_S = 60.0
# The profiler's own start-up and trace processing per profiled call: a full pipeline call traces tens of
# thousands of events (seconds, generous).
PROFILE_OVERHEAD_S = 10.0
# A warm compile (the inductor cache filled) against a cold one: regional compile 2.4 s warm vs 9.6 s cold in
# the PyTorch devlog; estimated at half, to stay on the safe side.
WARM_COMPILE_SHARE = 0.5
# Acceleration settings the bench passes through, where this engine's AccelSettings has the field.
ACCEL_FLAGS = ("compile", "fp8", "compile_mode", "compile_backend", "fp8_granularity", "attention",
               "cuda_graphs")  # fmt: skip
CALLS = iter(range(10**9))


def fresh_prompt() -> str:
    """A new prompt per call: the text-embedding cache never hits, so no variant is flattered by it."""
    return f"{PROMPT} #{next(CALLS)}"


def spec(size: int, level: str, steps: int, seed: int = 0, prompt: str | None = None) -> GenerationSpec:
    return GenerationSpec(kind="text", prompt=prompt or fresh_prompt(), width=size, height=size,
                          num_inference_steps=steps, seed=seed, num_images=1, guidance_scale=3.5,
                          enable_safety_checker=True, output_format="jpeg", sync_mode=False,
                          acceleration=level, base_url="")  # fmt: skip


def jpeg(images: list[Any]) -> float:
    started = time.perf_counter()
    for image in images:
        image.save(io.BytesIO(), format="JPEG", quality=95)
    return time.perf_counter() - started


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# --- what a pipeline really runs ----------------------------------------------------------------------------


def module_state(transformer: Any, vae: Any) -> dict[str, Any]:
    """Read from the modules themselves: a compiled forward, a wrapper (torch.compile's or a CUDA graph's), a
    fused QKV flag, an explicit attention backend, a channels-last VAE or an fp8 weight each shows here."""
    import torch

    modules = [*transformer.modules(), *vae.modules()]
    float8 = {torch.float8_e4m3fn, torch.float8_e5m2}
    conv = next((m for m in vae.modules() if isinstance(m, torch.nn.Conv2d)), None)
    processors = [getattr(m, "processor", None) for m in modules]
    backends = {str(p._attention_backend) for p in processors
                if getattr(p, "_attention_backend", None) is not None}  # fmt: skip
    state = {
        "transformer": type(transformer).__name__,
        "wrapped": hasattr(transformer, "_orig_mod") or hasattr(transformer, "inner"),
        "compiled_modules": sum(getattr(m, "_compiled_call_impl", None) is not None for m in modules),
        "fused_qkv_modules": sum(getattr(m, "fused_projections", False) is True for m in modules),
        "attention_backends": sorted(backends),
        "vae_channels_last": conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last)
        and not conv.weight.is_contiguous(),
        # torchao's Float8Tensor keeps its bytes in qdata; other fp8 layers keep them in a buffer.
        "float8_weights": any(getattr(t, "qdata", t).dtype in float8 for m in transformer.modules()
                              for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))),
    }
    state["eager"] = not any(value for key, value in state.items() if key != "transformer")
    return state


class StageClock:
    """Synchronised stage timers, in flux-fast's style: a sync where a stage starts and where it ends, so
    queued GPU work is billed to the stage that queued it; a stage entered several times (the transformer,
    once per step) adds up."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.open: dict[str, float] = {}

    def start(self, name: str) -> None:
        synchronize(self.device)
        self.open[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self.open.pop(name)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)


class StockPipeline:
    """Stock diffusers: FluxPipeline.__call__ over the engine's own modules (shared weights and memory), built
    once, from the modules as they are at level `none`, and only ever run inside level `none`."""

    def __init__(self, engine: FluxEngine) -> None:
        from diffusers import FluxPipeline

        self.engine = engine
        with engine.accel.level("none", engine):
            self.pipe = FluxPipeline(**engine.pipe.components)
        self.pipe.set_progress_bar_config(disable=True)
        self.clock: StageClock | None = None
        # Stock's own methods (nothing shared with the engine is patched), timed only during a stock run.
        self.pipe.encode_prompt = self.timed("text_encode", self.pipe.encode_prompt)
        self.pipe.image_processor.postprocess = self.timed("to_image", self.pipe.image_processor.postprocess)
        self.called: set[int] = set()  # ids of the transformer modules the last run called

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.clock is None:
                return fn(*args, **kwargs)
            with self.clock.stage(name):
                return fn(*args, **kwargs)

        return call

    def state(self) -> dict[str, Any]:
        with self.engine.accel.level("none", self.engine):
            return module_state(self.pipe.transformer, self.pipe.vae)

    def run(self, size: int, batch: int, steps: int) -> dict[str, float]:
        engine = self.engine
        clock = StageClock(engine.placement.device)
        self.called = set()
        started = time.perf_counter()
        with engine.accel.level("none", engine):
            hooks = self.hooks(clock)  # on modules the engine shares: only for this run
            try:
                self.clock = clock
                images = self.pipe(prompt=[fresh_prompt() for _ in range(batch)], width=size, height=size,
                                   num_inference_steps=steps, guidance_scale=0.0,
                                   generator=generators(list(range(batch))),
                                   max_sequence_length=MAX_SEQUENCE_LENGTH).images  # fmt: skip
            finally:
                self.clock = None
                for hook in hooks:
                    hook.remove()
            if engine.safety is not None:
                with clock.stage("safety"):
                    engine.safety.check(images)
        clock.seconds["encode"] = jpeg(images)
        return {**clock.seconds, "total": time.perf_counter() - started}

    def hooks(self, clock: StageClock) -> list[Any]:
        transformer, decoder = self.pipe.transformer, self.pipe.vae.decoder

        def transformer_starts(module: Any, args: Any) -> None:
            self.called.add(id(module))
            clock.start("denoise")

        return [transformer.register_forward_pre_hook(transformer_starts),
                transformer.register_forward_hook(lambda *_: clock.stop("denoise")),
                decoder.register_forward_pre_hook(lambda *_: clock.start("vae_decode")),
                decoder.register_forward_hook(lambda *_: clock.stop("vae_decode"))]  # fmt: skip


def run_level(engine: FluxEngine, size: int, batch: int, steps: int, level: str) -> dict[str, float]:
    """fluxserve as the worker runs it: `none` one job per call (never batched, to stay bit-exact), the other
    levels one generate_batch of `batch` jobs. Stage seconds are the engine's own (synchronised on CUDA)."""
    specs = [spec(size, level, steps, seed) for seed in range(batch)]
    groups = [[s] for s in specs] if level == "none" else [specs]
    stages: dict[str, float] = {}
    started = time.perf_counter()
    for group in groups:
        results = engine.generate_batch(group)
        for name, seconds in results[0].timings.items():  # a batch's stage timings are shared by its jobs
            stages[name] = stages.get(name, 0.0) + seconds
        stages["encode"] = stages.get("encode", 0.0) + jpeg([image for r in results for image in r.images])
    synchronize(engine.placement.device)
    stages["total"] = time.perf_counter() - started
    return stages


# --- time ---------------------------------------------------------------------------------------------------


@dataclass
class Deadline:
    seconds: float | None

    def left(self) -> float:
        return math.inf if self.seconds is None else STARTED + self.seconds - time.monotonic()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()


def work(size: int, batch: int) -> int:
    return size * size * batch


@dataclass
class Estimator:
    """How long a variant will take, from the rows this run has measured: its level's steady time at the
    nearest shape, scaled by pixels x images (else the slowest variant seen), plus a compile where one is
    due."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if "total" in row:
            self.rows.append(row)

    def per_call(self, level: str | None, size: int, batch: int) -> float:
        wanted = work(size, batch)
        scaled = [(row, row["total"] * wanted / work(row["size"], row["batch"])) for row in self.rows]
        same = [(row, seconds) for row, seconds in scaled if row["level"] == level]
        if same:  # the nearest shape: the smallest ratio of work either way
            nearest = min(same, key=lambda rs: abs(math.log(wanted / work(rs[0]["size"], rs[0]["batch"]))))
            return nearest[1]
        return max((seconds for _, seconds in scaled), default=0.0)

    def compile_s(self, level: str | None, size: int, batch: int, compiles: bool) -> float:
        done = any(r["level"] == level and (r["size"], r["batch"]) == (size, batch) for r in self.rows)
        if not compiles or done:
            return 0.0
        seen = [r["compile_s"] for r in self.rows if r.get("compile_s") is not None]
        mine = [r["compile_s"] for r in self.rows if r.get("compile_s") is not None and r["level"] == level]
        return max(mine or seen or [COMPILE_PRIOR_S])

    def estimate(self, level: str | None, size: int, batch: int, calls: int, compiles: bool) -> float:
        return calls * self.per_call(level, size, batch) + self.compile_s(level, size, batch, compiles)


# --- results ------------------------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)  # a reader (or a kill) never sees half a file


@dataclass
class Results:
    out: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, Any] = field(default_factory=dict)
    kernels: dict[str, Any] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)

    def header(self) -> str:
        m = self.meta
        return (f"{m['date']}, {m['device_name']}, torch {m['torch']}, {m['steps']} steps, {m['model']}, "
                f"skipped: {m.get('skipped') or 'nothing'}")  # fmt: skip

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        self.meta["elapsed_s"] = round(time.monotonic() - STARTED, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        report = {"header": self.header(), "meta": self.meta, "rows": self.rows, "fidelity": self.fidelity,
                  "restart": self.restart, "kernels": kernel_summary(self.kernels)}  # fmt: skip
        write_atomically(self.out / "engine.json", json.dumps(report, indent=2, allow_nan=False, default=str))
        write_atomically(self.out / "kernels.json", json.dumps(self.kernels, indent=2, allow_nan=False))
        write_atomically(self.out / "engine.md", markdown(self) + "\n")


def kernel_summary(kernels: dict[str, Any]) -> dict[str, Any]:
    return {level: {key: found.get(key) for key in ("gemm", "attention", "fp8_gemm", "skipped", "error")
                    if key in found} for level, found in kernels.get("levels", {}).items()}  # fmt: skip


def cell(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(results: Results) -> str:
    measured = [r for r in results.rows if "total" in r]
    seen = {name for r in measured for name in r["stages"]}
    stages = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES) - {"total"})
    lines = [results.header(), "",
             "| size | batch | variant | total s | per image s | speed-up | first call s | compile s | "
             "peak GiB | " + " | ".join(stages) + " | runs with |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(stages) + "---|"]  # fmt: skip
    for r in results.rows:
        start = f"| {r['size']}² | {r['batch']} | {r['variant']} |"
        if "skipped" in r:
            needs = f" (needs ≈{r['estimate_s']} s, {r['left_s']} s left)" if "estimate_s" in r else ""
            lines.append(f"{start} skipped: {r['skipped']}{needs} |")
            continue
        if "total" not in r:
            lines.append(f"{start} error: {r.get('error')} |")
            continue
        runs_with = ", ".join(r["runs_with"]) or ("stock, eager" if r["level"] is None else "nothing")
        if r.get("dropped"):
            runs_with += f" (dropped after failing: {', '.join(r['dropped'])})"
        if r.get("cut_short"):
            runs_with += f" ({r['runs']} timed runs: cut short by the deadline)"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}×"
        cells = [f"{r['total']:.3f}", f"{r['per_image']:.3f}", ratio, cell(r["first_call_s"]),
                 cell(r.get("compile_s"), 1), cell(r.get("peak_gpu_gib"), 1),
                 *(cell(r["stages"].get(s)) for s in stages), runs_with]  # fmt: skip
        lines.append(f"{start} " + " | ".join(cells) + " |")
    lines += fidelity_markdown(results.fidelity) + compile_markdown(results)
    lines += kernels_markdown(results.kernels)
    return "\n".join(lines)


def fidelity_markdown(fidelity: dict[str, Any]) -> list[str]:
    if not fidelity:
        return []
    if "levels" not in fidelity:
        return ["", f"Fidelity against `none`: {fidelity.get('skipped') or fidelity.get('error')}"]
    title = (f"Fidelity against `none` ({fidelity['label']}; {fidelity['size']}², batch 1, "
             f"{len(fidelity['prompts'])} prompts, same seeds):")
    lines = ["", title, "", "| level | max abs diff (0-255) | mean abs diff | PSNR dB |", "|---|---|---|---|"]
    for level, q in fidelity["levels"].items():
        psnr = "identical" if q["psnr_db"] is None else f"{q['psnr_db']:.1f}"
        lines.append(f"| {level} | {q['max_abs_diff']:.0f} | {q['mean_abs_diff']:.3f} | {psnr} |")
    return lines


def compile_markdown(results: Results) -> list[str]:
    cold = [r for r in results.rows if r.get("compile_s") is not None]
    lines = [] if not results.restart.get("skipped") else ["", f"Restart probe: {results.restart['skipped']}"]
    if not cold:
        return lines
    warm = results.restart.get("levels", {})
    title = ("Compile seconds: cold = first call minus the steady median, per shape; warm = the same after "
             "`torch._dynamo.reset()`, with the inductor cache this run filled (a restarted worker's cost):")
    lines += ["", title, "", "| level | size | batch | cold s | warm s |", "|---|---|---|---|---|"]
    for r in cold:
        probed = (r["size"], r["batch"]) == (results.restart.get("size"), results.restart.get("batch"))
        probe = warm.get(r["level"], {}) if probed else {}
        lines.append(f"| {r['level']} | {r['size']}² | {r['batch']} | {r['compile_s']:.1f} | "
                     f"{cell(probe.get('warm_compile_s'), 1)} |")  # fmt: skip
    return lines


def kernels_markdown(kernels: dict[str, Any]) -> list[str]:
    levels = kernels.get("levels", {})
    if not levels:
        return []
    title = (f"What ran, one step per level ({kernels['size']}², batch 1; the top 15 kernels by time are in "
             "kernels.json):")
    header = "| level | top GEMM kernel | fp8 GEMM | top attention kernel |"
    lines = ["", title, "", header, "|---|---|---|---|"]
    for level, found in levels.items():
        if "top" not in found:
            lines.append(f"| {level} | {found.get('skipped') or found.get('error')} | | |")
            continue
        lines.append(f"| {level} | `{found['gemm']}` | {'yes' if found['fp8_gemm'] else 'no'} | "
                     f"`{found['attention']}` |")  # fmt: skip
    return lines


# --- the engine ---------------------------------------------------------------------------------------------


def accel_settings(args: argparse.Namespace) -> tuple[AccelSettings, dict[str, Any]]:
    """AccelSettings from the flags given. A flag for a field this engine's AccelSettings does not have is
    reported (meta.ignored_flags), not passed."""
    known = {f.name for f in dataclasses.fields(AccelSettings)}
    given = {name: getattr(args, name) for name in ACCEL_FLAGS if getattr(args, name) is not None}
    if args.disable:
        given["disabled"] = frozenset(n.strip() for n in args.disable.split(",") if n.strip())
    ignored = {name: value for name, value in given.items() if name not in known}
    return AccelSettings(**{name: value for name, value in given.items() if name in known}), ignored


def engine_from(pipe: Any, safety: SafetyChecker, placement: Placement, accel: AccelSettings) -> FluxEngine:
    return FluxEngine.from_pipeline(pipe, safety, placement, accel)


def tiny_model(args: argparse.Namespace) -> Path:
    """--model, else the demo's data/models/flux-schnell-tiny (as `make run` writes it), else a tiny model
    built once into <out>/tiny-model: a fresh clone benchmarks with no flags."""
    if args.model:
        return Path(args.model)
    default = Path("data") / TINY_MODEL_SUBDIR
    if (default / "model_index.json").is_file():
        return default
    cache = Path(args.out) / "tiny-model"
    if not (cache / ".complete").is_file():  # a build that was interrupted is redone
        from fluxserve.engine.tiny import build_tiny_flux

        print(f"no model at {default}: building the tiny demo model into {cache} (once)", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
        build_tiny_flux(cache)
        (cache / ".complete").touch()
    return cache


def load_engine(args: argparse.Namespace, accel: AccelSettings) -> tuple[FluxEngine, str]:
    quiet_libraries()
    if args.random_full_size:
        import torch
        from benchmarks.random_flux import full_size_pipeline

        placement = Placement(args.device, "bfloat16")
        pipe, checker, extractor = full_size_pipeline(args.device, torch.bfloat16)
        return engine_from(pipe, SafetyChecker(checker, extractor, placement), placement, accel), \
            "full-size random weights"  # fmt: skip
    model = tiny_model(args)
    require_model_dir(model)
    placement = resolve_placement(args.device, args.dtype)
    pipe = load_flux_pipeline(model, placement)
    return engine_from(pipe, SafetyChecker.load(model, placement), placement, accel), str(model.resolve())


def describe_accel(engine: FluxEngine) -> dict[str, Any]:
    return engine.accel.describe(engine)


def runs_with(engine: FluxEngine, level: str | None) -> list[str]:
    """What a level really runs with, read from the modules."""
    return [] if level is None else list(engine.accel.running(engine, level))


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def forget_cuda_graphs(engine: FluxEngine) -> None:
    """A captured CUDA graph replays without calling the compiled code: drop the captures, so the restart
    probe pays what a restarted worker pays (trace, inductor cache load, capture)."""
    graphs = getattr(engine.pipe.transformer, "graphs", None)
    if isinstance(graphs, dict):
        graphs.clear()


# --- the run ------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    engine: FluxEngine
    stock: StockPipeline
    args: argparse.Namespace
    deadline: Deadline
    results: Results
    estimator: Estimator = field(default_factory=Estimator)
    # level -> why it failed with nothing left to drop: later rows and phases skip it, not fail again.
    broken: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.engine.placement.device

    def rows(self, size: int, batch: int) -> None:
        for level in (None, *self.args.levels):
            self.variant(size, batch, level)

    def variant(self, size: int, batch: int, level: str | None) -> None:
        base = {"size": size, "batch": batch, "variant": STOCK if level is None else f"fluxserve {level}",
                "level": level}  # fmt: skip
        ran_with = runs_with(self.engine, level)
        calls = self.args.warmups + self.args.repeats
        estimate = self.estimator.estimate(level, size, batch, calls, "compile" in ran_with)
        if level in self.broken:
            row = {**base, "skipped": f"{level} failed earlier: {self.broken[level]}"}
        elif not self.deadline.fits(estimate):
            row = {**base, "skipped": "deadline", "estimate_s": round(estimate, 1),
                   "left_s": round(max(self.deadline.left(), 0.0), 1)}  # fmt: skip
        else:
            row = {**base, **self.attempt(size, batch, level, ran_with)}
        stock = next((r for r in self.results.rows if r["level"] is None and "total" in r
                      and (r["size"], r["batch"]) == (size, batch)), None)  # fmt: skip
        if "total" in row:
            row["ratio"] = 1.0 if level is None else (stock["total"] / row["total"] if stock else None)
        self.estimator.add(row)
        self.results.add(row)
        print(f"{base['variant']} {size}² batch {batch}: " + (f"{row['total']:.3f} s" if "total" in row else
              str(row.get("skipped") or row.get("error"))), file=sys.stderr)  # fmt: skip

    def attempt(self, size: int, batch: int, level: str | None, ran_with: list[str]) -> dict[str, Any]:
        """Measure a variant. A level that fails loses its riskiest optimisation and is tried again, as the
        engine's warm-up does, until it runs or nothing is left to drop: one failure costs a switch, not the
        rest of a GPU run."""
        accel, dropped = self.engine.accel, []
        while True:
            try:
                row = self.measure(size, batch, level, ran_with)
                return {**row, "dropped": dropped} if dropped else row
            except Exception as exc:  # noqa: BLE001 - recorded in the row; the run goes on
                traceback.print_exc()
                reason = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                culprit = accel.riskiest(level) if level else None
                if culprit is None:
                    if level is not None:
                        self.broken[level] = reason
                    return {"error": reason, "dropped": dropped}
                accel.drop(level, culprit, f"failed in the benchmark: {reason}")
                dropped.append(culprit)
                ran_with = runs_with(self.engine, level)

    def measure(self, size: int, batch: int, level: str | None, ran_with: list[str]) -> dict[str, Any]:
        steps = self.args.steps
        if level is None:
            state = self.stock.state()

            def call() -> dict[str, float]:
                return self.stock.run(size, batch, steps)
        else:

            def call() -> dict[str, float]:
                return run_level(self.engine, size, batch, steps, level)

        reset_peak_memory(self.device)
        planned = self.args.warmups + self.args.repeats
        calls: list[dict[str, float]] = []
        while len(calls) < planned and (not calls or self.deadline.fits(calls[-1]["total"])):
            calls.append(call())
        first, cut_short = calls[0], len(calls) < planned
        timed = calls[self.args.warmups :] or calls[-1:]  # cut during the warm-ups: the last call is all
        keys = [key for key in (*STAGES, "total") if any(key in r for r in timed)]
        keys += sorted({key for r in timed for key in r} - set(keys))
        stages = {key: statistics.median(r[key] for r in timed if key in r) for key in keys}
        total = stages.pop("total")
        row: dict[str, Any] = {"runs_with": ran_with, "runs": len(timed), "total": total,
                               "per_image": total / batch, "first_call_s": first["total"], "stages": stages,
                               "peak_gpu_gib": peak_memory_gib(self.device)}  # fmt: skip
        if "compile" in ran_with:
            row["compile_s"] = max(first["total"] - total, 0.0)
        if cut_short:
            row["cut_short"] = "deadline"
        if level is None:
            eager = self.stock.pipe.transformer
            called_only_eager = self.stock.called == {id(eager)}
            row["stock_state"] = {**state, "called_only_its_eager_transformer": called_only_eager}
        return row

    def kernels(self, size: int) -> None:
        """One step per level under the profiler: the GEMM and attention kernels that really ran."""
        found: dict[str, Any] = {"size": size, "device": self.device, "levels": {}}
        self.results.kernels = found
        for level in self.args.levels:
            estimate = self.estimator.per_call(level, size, 1) + PROFILE_OVERHEAD_S
            if level in self.broken:
                found["levels"][level] = {"skipped": f"{level} failed earlier"}
                continue
            if not self.deadline.fits(estimate):
                found["levels"][level] = {"skipped": f"deadline (needs ≈{estimate:.0f} s)"}
                continue
            one = spec(size, level, steps=1)
            try:
                prof = profiled(lambda one=one: self.engine.generate(one), self.device)
                top = top_kernels(prof, self.device)
            except Exception as exc:  # noqa: BLE001 - the profile is a finding, not a precondition
                found["levels"][level] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
                continue
            names = {kind: next((k["name"] for k in top if k["kind"] == kind), None)
                     for kind in ("gemm", "attention")}  # fmt: skip
            fp8 = any(k["kind"] == "gemm" and k["fp8"] for k in top)
            found["levels"][level] = {"runs_with": runs_with(self.engine, level), "top": top, **names,
                                      "fp8_gemm": fp8}  # fmt: skip
            self.results.write()
        self.results.write()

    def fidelity(self, size: int) -> None:
        """Each level against `none` (itself too: `none` must be bit-exact) on fixed prompts and seeds."""
        import numpy as np

        levels = [level for level in self.args.levels if level not in self.broken]
        if "none" in self.broken:
            self.results.fidelity = {"skipped": "none failed earlier"}
            self.results.write()
            return
        per_call = [self.estimator.per_call(level, size, 1) for level in ("none", *levels)]
        estimate = len(FIDELITY_PROMPTS) * sum(per_call)
        if not self.deadline.fits(estimate):
            self.results.fidelity = {"skipped": f"deadline (needs ≈{estimate:.0f} s)"}
            self.results.write()
            return

        def images(level: str) -> list[Any]:
            specs = [spec(size, level, self.args.steps, seed=seed, prompt=prompt)
                     for seed, prompt in enumerate(FIDELITY_PROMPTS)]  # fmt: skip
            return [np.asarray(self.engine.generate(s).images[0], dtype=np.float64) for s in specs]

        try:
            reference = images("none")
            report: dict[str, Any] = {}
            for level in levels:
                diffs = [np.abs(a - b) for a, b in zip(images(level), reference, strict=True)]
                mse = float(np.mean([np.mean(d**2) for d in diffs]))
                report[level] = {"max_abs_diff": float(max(d.max() for d in diffs)),
                                 "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
                                 "psnr_db": None if mse == 0 else float(10 * np.log10(255**2 / mse))}
            self.results.fidelity = {"label": FIDELITY_LABEL, "size": size, "prompts": list(FIDELITY_PROMPTS),
                                     "levels": report}  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            self.results.fidelity = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        self.results.write()

    def restart_probe(self, size: int) -> None:
        """Compile seconds warm: forget every compiled graph (`torch._dynamo.reset()`), then one call per
        compiled level at batch 1, with the inductor cache this run has filled."""
        compiled = [r for r in self.results.rows if r.get("compile_s") is not None and r["batch"] == 1
                    and r["size"] == size and r["level"] not in self.broken]  # fmt: skip
        if not compiled:
            self.results.restart = {"skipped": "no level compiled at batch 1 in this run"}
            self.results.write()
            return
        estimate = sum(WARM_COMPILE_SHARE * r["compile_s"] + r["total"] for r in compiled)
        if not self.deadline.fits(estimate):
            self.results.restart = {"skipped": f"deadline (needs ≈{estimate:.0f} s)"}
            self.results.write()
            return
        import torch

        torch._dynamo.reset()
        found: dict[str, Any] = {"size": size, "batch": 1, "levels": {}}
        self.results.restart = found
        for row in compiled:
            level = row["level"]
            with self.engine.accel.level(level, self.engine):
                forget_cuda_graphs(self.engine)
            try:
                first = run_level(self.engine, size, 1, self.args.steps, level)["total"]
                found["levels"][level] = {"first_call_s": first, "cold_compile_s": row["compile_s"],
                                          "warm_compile_s": max(first - row["total"], 0.0)}  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                found["levels"][level] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            self.results.write()


def run_meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = args.device == "cuda" and torch.cuda.is_available()
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    cache_empty = not (cache and Path(cache).is_dir() and any(Path(cache).iterdir()))
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "steps": args.steps,
        "model": "full-size random weights" if args.random_full_size else "(loading)",
        "deadline_s": args.deadline_s,
        "inductor_cache": {"dir": cache, "empty_at_start": cache_empty},  # else "cold" compiles are warm
        "argv": sys.argv[1:],
    }


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda value: [kind(x) for x in value.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", help="a FLUX.1 [schnell] folder (default: data/models/flux-schnell-tiny, "
                        "else a tiny model built into <out>/tiny-model)")  # fmt: skip
    parser.add_argument("--random-full-size", action="store_true",
                        help="full-size random weights on --device")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sizes", default="512,1024", type=comma_list(int))
    parser.add_argument("--batches", default="1,4", type=comma_list(int))
    parser.add_argument("--levels", default=",".join(LEVELS), type=comma_list(str))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, help="seconds from start; variants that would not finish "
                        "by then are written as skipped")  # fmt: skip
    parser.add_argument("--compile", help="auto | on | off (engine default: auto, CUDA only)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode (default: default, which compiles in seconds; "
                        "max-autotune-no-cudagraphs takes minutes a shape)")  # fmt: skip
    parser.add_argument("--compile-backend", help="torch.compile backend (engine default: inductor)")
    parser.add_argument("--fp8", help="auto | on | off (engine default: auto, CUDA 8.9+)")
    parser.add_argument("--fp8-granularity", help="row | tensor")
    parser.add_argument("--attention", help="auto | default | a backend name")
    parser.add_argument("--cuda-graphs", help="auto | on | off")
    parser.add_argument("--disable", help="comma-separated optimisations to switch off")
    parser.add_argument("--out", default="benchmarks/results",
                        help="folder for engine.json, engine.md, kernels.json")  # fmt: skip
    args = parser.parse_args()
    unknown = [level for level in args.levels if level not in LEVELS]
    if unknown:
        parser.error(f"unknown level(s) {', '.join(unknown)}: choose from {', '.join(LEVELS)}")
    return args


def main() -> None:
    args = parse_args()
    accel, ignored = accel_settings(args)
    results = Results(out=Path(args.out), meta={**run_meta(args), "ignored_flags": ignored})
    results.write()  # a run stopped while loading still says what it was
    engine, model = load_engine(args, accel)
    results.meta.update(model=model, load_s=round(time.monotonic() - STARTED, 1),
                        skipped=dict(engine.accel.skipped), accel=describe_accel(engine))  # fmt: skip
    bench = Bench(engine=engine, stock=StockPipeline(engine), args=args, deadline=Deadline(args.deadline_s),
                  results=results)  # fmt: skip
    first_batch, *other_batches = args.batches
    for size in args.sizes:
        bench.rows(size, first_batch)
    bench.kernels(args.sizes[0])
    bench.fidelity(args.sizes[0])
    for batch in other_batches:
        for size in args.sizes:
            bench.rows(size, batch)
    bench.restart_probe(args.sizes[0])
    results.write()
    print(markdown(results))


if __name__ == "__main__":
    main()
