"""The GPU benchmark's preflight: in under a minute and a half, everything `benchmarks/gpu.sh` needs is
checked, and the machine's own ceilings are measured, before minutes are spent building a 12B model.

    python3 benchmarks/gpu_preflight.py --out RESULTS            # on the CUDA machine (gpu.sh runs it)
    python benchmarks/gpu_preflight.py --cpu-rehearsal --out DIR  # the same checks on CPU, at tiny sizes

In order: versions (torch, CUDA, cuDNN, triton, diffusers, transformers, torchao, regex, huggingface_hub,
...); the carried wheels' requirements against what is installed; a CUDA device; the imports the benchmark
makes and both torchao fp8 configs; then ceilings on random inputs: bf16 GEMM, fp8 `torch._scaled_mm`
(row-wise and tensor-wise scales, fast accumulation) at a Flux block's shape, SDPA at Flux's attention shape
under each backend (and the kernel PyTorch's default picks), and a device-to-device copy. preflight.json is
rewritten after each step. The first failed check stops the run with one line saying what failed and what to
do; a ceiling that cannot be measured is recorded with its reason and stops nothing (the benchmark itself can
still run).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# What the carried wheels must bring, and what the benchmark imports from them.
STACK = ("diffusers", "transformers", "torchao")
VERSIONS = ("torch", "triton", "diffusers", "transformers", "torchao", "regex", "huggingface_hub",
            "tokenizers", "accelerate", "safetensors", "numpy", "pillow", "sentencepiece", "torchvision",
            "packaging")  # fmt: skip

# Requirements on a backport of a standard-library module are met by the standard library on Python 3.12:
# diffusers lists importlib_metadata but imports that backport only on Python < 3.8 (utils/import_utils.py).
STDLIB_BACKPORTS = {"importlib-metadata": "importlib.metadata"}

# The GPU machine (benchmarks/gpu_machine.txt): CPython 3.12 on x86-64 Linux. Markers are evaluated for it.
GPU_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
               "implementation_version": "3.12.3", "platform_python_implementation": "CPython",
               "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
               "os_name": "posix", "extra": ""}  # fmt: skip

# FLUX.1 at 1024x1024 with 256 text tokens: 4096 + 256 tokens, hidden 3072 (24 heads of 128), MLP 4x.
FLUX_TOKENS, FLUX_HIDDEN, FLUX_MLP, FLUX_HEADS, FLUX_HEAD_DIM = 4352, 3072, 12288, 24, 128


# --- the carried wheels' requirements -----------------------------------------------------------------------


@dataclass
class RequirementReport:
    unmet: list[str] = field(default_factory=list)
    # Met only on trust: the package is known to be there, its version is not.
    unknown_version: list[str] = field(default_factory=list)
    backports: list[str] = field(default_factory=list)


def check_requirements(requirers: dict[str, Iterable[str]], available: dict[str, str | None],
                       markers: dict[str, str] | None = None) -> RequirementReport:  # fmt: skip
    """Each requirer's Requires-Dist lines (extras skipped, markers evaluated for `markers`, default: this
    interpreter) against `available`: canonical name -> version, or None where only its presence is known."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    report = RequirementReport()
    for requirer, lines in requirers.items():
        for line in lines:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**(markers or {}), "extra": ""}):
                continue  # another platform or Python, or an extra
            name = canonicalize_name(req.name)
            wanted = f"{requirer} needs {req.name}{req.specifier or ''}"
            if name in STDLIB_BACKPORTS and name not in available:
                report.backports.append(f"{wanted}: met by the standard library's {STDLIB_BACKPORTS[name]}")
            elif name not in available:
                report.unmet.append(f"{wanted}, which is not there")
            elif available[name] is None:
                report.unknown_version.append(f"{wanted}: {req.name} is there, its version is unknown")
            elif not req.specifier.contains(Version(available[name]), prereleases=True):
                report.unmet.append(f"{wanted}, but {req.name} is {available[name]}")
    return report


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution on sys.path; the first one wins, as it does for imports
    (gpu.sh puts the carried wheels' folder first)."""
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


# --- timing and profiling (shared with bench_engine.py) -----------------------------------------------------


def time_ms(fn: Callable[[], Any], device: str, repeats: int = 20) -> float:
    """Median milliseconds of one call: triton's do_bench on CUDA when it is there (it flushes the L2 between
    calls), else CUDA events; wall clock on CPU."""
    import torch

    if device == "cuda":
        try:
            from triton.testing import do_bench
        except Exception:  # noqa: BLE001 - no triton, or one that does not import: CUDA events below
            do_bench = None
        if do_bench is not None:
            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    fn()
    times = []
    for _ in range(max(3, repeats // 4)):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


# cuBLAS (gemm, xmma, nvjet), CUTLASS, inductor's GEMM templates (triton_tem_fused_mm_0, ...addmm...), and the
# aten operators on CPU.
GEMM_MARKS = ("gemm", "xmma", "cutlass", "nvjet", "matmul", "scaled_mm", "wgmma", "triton_tem", "_mm",
              "addmm", "aten::mm", "aten::bmm")  # fmt: skip
ATTENTION_MARKS = ("flash", "fmha", "sdpa", "attention", "attn")
# Convolutions before GEMMs: cuDNN runs them as implicit GEMMs (sm90_xmma_fprop_implicit_gemm_...). Attention
# before both: cuDNN's SDPA kernels are named ..._sdpa_..._fprop_...
CONV_MARKS = ("conv", "fprop", "implicit_gemm", "winograd")


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    if any(mark in lowered for mark in ATTENTION_MARKS):
        return "attention"
    if any(mark in lowered for mark in CONV_MARKS):
        return "conv"
    if any(mark in lowered for mark in GEMM_MARKS):
        return "gemm"
    return "other"


def is_fp8_kernel(name: str) -> bool:
    lowered = name.lower()
    return any(mark in lowered for mark in ("e4m3", "e5m2", "f8f8", "fp8", "float8", "scaled_mm"))


def top_kernels(prof: Any, device: str, count: int = 15) -> list[dict[str, Any]]:
    """The `count` kernels (CUDA) or operators (CPU, where there are no kernels) that took the most time."""
    from torch.autograd import DeviceType

    rows = []
    for event in prof.key_averages():
        if device == "cuda":
            if event.device_type != DeviceType.CUDA:
                continue
            # self_device_time_total since torch 2.4; self_cuda_time_total before
            micros = getattr(event, "self_device_time_total", None) or event.self_cuda_time_total
        else:
            micros = event.self_cpu_time_total
        rows.append({"name": event.key, "time_us": round(float(micros), 1), "calls": int(event.count),
                     "kind": kernel_kind(event.key), "fp8": is_fp8_kernel(event.key)})  # fmt: skip
    rows.sort(key=lambda row: -row["time_us"])
    return rows[:count]


def profiled(fn: Callable[[], Any], device: str) -> Any:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return prof


# --- the checks ---------------------------------------------------------------------------------------------


def figure(value: float) -> float:
    """Four significant digits: 788.3 TF/s on the GPU and 0.04113 TF/s at the rehearsal's tiny sizes alike."""
    return float(f"{value:.4g}")


class PreflightFailed(Exception):
    """One check failed; the message says what and what to do."""


@dataclass
class Preflight:
    out: Path
    rehearsal: bool
    report: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def device(self) -> str:
        return "cpu" if self.rehearsal else "cuda"

    def write(self) -> None:
        self.report["seconds"] = round(time.monotonic() - self.started, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        partial = self.out / ".preflight.json.partial"
        partial.write_text(json.dumps(self.report, indent=2, default=str))
        partial.replace(self.out / "preflight.json")

    def say(self, line: str) -> None:
        print(f"preflight: {line}", flush=True)

    def run(self) -> int:
        self.report.update(mode="cpu-rehearsal" if self.rehearsal else "cuda", python=sys.version.split()[0],
                           date=time.strftime("%Y-%m-%d %H:%M:%S"), platform=platform.platform(),
                           checks={})  # fmt: skip
        steps = [("versions", self.versions), ("requirements", self.requirements),
                 ("device", self.device_check), ("imports", self.imports),
                 ("ceilings", self.ceilings)]  # fmt: skip
        for name, step in steps:
            try:
                self.report["checks"][name] = step()
            except Exception as exc:  # noqa: BLE001 - every failure becomes the one line below
                message = str(exc) if isinstance(exc, PreflightFailed) else f"{type(exc).__name__}: {exc}"
                self.report["failed"] = {"check": name, "message": message,
                                         "traceback": traceback.format_exc()}  # fmt: skip
                self.write()
                first_line = message.splitlines()[0] if message else ""
                print(f"preflight FAILED at {name}: {first_line}", file=sys.stderr)
                return 1
            self.write()
        self.report["failed"] = None
        self.write()
        self.say(f"passed in {self.report['seconds']} s; ceilings in {self.out / 'preflight.json'}")
        return 0

    def versions(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for dist in VERSIONS:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = None
                continue
            module = {"pillow": "PIL"}.get(dist, dist)
            spec = importlib.util.find_spec(module)
            where = str(Path(spec.origin).parent) if spec and spec.origin else None
            found[dist] = {"version": version, "from": where}
        missing = [name for name in ("torch", *STACK) if found.get(name) is None]
        if missing:
            raise PreflightFailed(f"{', '.join(missing)} not installed: gpu.sh installs .whl/*.whl, which "
                                  "`make gpu-wheels` writes where the package registry is reachable")
        import torch

        found["cuda"] = torch.version.cuda
        found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        self.say(", ".join(f"{name} {value['version'] if isinstance(value, dict) else value}"
                           for name, value in found.items() if value is not None))  # fmt: skip
        return found

    def requirements(self) -> dict[str, Any]:
        available = installed_versions()
        requirers = {f"{name} {importlib.metadata.version(name)}": importlib.metadata.requires(name) or []
                     for name in STACK}  # fmt: skip
        report = check_requirements(requirers, available)
        if report.unmet:
            raise PreflightFailed("; ".join(report.unmet) + ": carry the wheel (GPU_WHEELS in the Makefile)")
        self.say(f"the requirements of {', '.join(requirers)} are met")
        return {"met": True, "backports": report.backports}

    def device_check(self) -> dict[str, Any]:
        import torch

        if self.rehearsal:
            return {"device": "cpu", "threads": torch.get_num_threads()}
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            raise PreflightFailed(f"torch {torch.__version__} sees no CUDA device (CUDA_VISIBLE_DEVICES="
                                  f"{visible}); this checks a GPU machine, --cpu-rehearsal rehearses it on "
                                  "CPU")  # fmt: skip
        props = torch.cuda.get_device_properties(0)
        found = {"name": props.name, "capability": [props.major, props.minor],
                 "memory_gib": round(props.total_memory / 2**30, 1),
                 "multiprocessors": props.multi_processor_count, "nvidia_smi": nvidia_smi()}  # fmt: skip
        self.say(f"{props.name}, sm{props.major}{props.minor}, {found['memory_gib']} GiB; "
                 f"nvidia-smi: {found['nvidia_smi']}")  # fmt: skip
        return found

    def imports(self) -> dict[str, Any]:
        sys.path.insert(0, str(ROOT / "src"))
        found = {}
        for module in ("diffusers", "transformers", "torchao.quantization", "fluxserve.engine.flux"):
            found[module] = str(getattr(importlib.import_module(module), "__file__", None))
        from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel  # noqa: F401
        from diffusers.pipelines.stable_diffusion import safety_checker  # noqa: F401
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            PerRow,
        )
        from transformers import CLIPImageProcessor, CLIPTextModel, T5EncoderModel  # noqa: F401

        found["fp8_configs"] = [repr(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))[:200],
                                repr(Float8WeightOnlyConfig())[:200]]  # fmt: skip
        self.say("imports of diffusers, transformers, torchao.quantization and fluxserve's engine work; "
                 "both fp8 configs construct")  # fmt: skip
        return found

    def ceilings(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        self.report["checks"]["ceilings"] = found
        for name, measure in (("bf16_gemm", self.gemm), ("scaled_mm", self.scaled_mm), ("sdpa", self.sdpa),
                              ("copy", self.copy)):  # fmt: skip
            try:
                found[name] = measure()
            except Exception as exc:  # noqa: BLE001 - a ceiling that cannot be measured is a finding
                found[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
                self.say(f"{name}: not measured: {found[name]['error']}")
            self.write()
        return found

    def gemm(self) -> dict[str, Any]:
        import torch

        n = 256 if self.rehearsal else 8192
        a = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
        ms = time_ms(lambda: a @ b, self.device)
        found = {"shape": [n, n, n], "ms": figure(ms), "tflops": figure(2 * n**3 / ms / 1e9)}
        self.say(f"bf16 GEMM {n}^3: {found['tflops']} TF/s")
        return found

    def scaled_mm(self) -> dict[str, Any]:
        """fp8 e4m3 x e4m3 -> bf16 at a block linear's shape (tokens x hidden x MLP), the GEMM `high` runs."""
        import torch

        m, k, n = (64, 64, 128) if self.rehearsal else (FLUX_TOKENS, FLUX_HIDDEN, FLUX_MLP)
        a = torch.randn(m, k, device=self.device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=self.device).to(torch.float8_e4m3fn).t()  # column-major, for cuBLASLt

        def scale(*shape: int) -> Any:
            return torch.rand(shape, device=self.device) + 0.5  # shape () is a tensor-wise scale

        scales = {"rowwise": (scale(m, 1), scale(1, n)), "tensorwise": (scale(), scale())}
        found: dict[str, Any] = {"shape": [m, k, n]}
        for name, (scale_a, scale_b) in scales.items():
            def call(scale_a: Any = scale_a, scale_b: Any = scale_b) -> Any:
                return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16,
                                        use_fast_accum=True)  # fmt: skip

            try:
                ms = time_ms(call, self.device)
                found[name] = {"ms": figure(ms), "tflops": figure(2 * m * k * n / ms / 1e9)}
            except Exception as exc:  # noqa: BLE001 - e.g. row-wise scales need sm89+ and a recent cuBLASLt
                found[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        self.say(f"fp8 _scaled_mm {m}x{k}x{n}: " + ", ".join(
            f"{name} {found[name].get('tflops', found[name].get('error'))}" for name in scales) + " TF/s")
        return found

    def sdpa(self) -> dict[str, Any]:
        """Attention at Flux's shape under each backend, and the kernel PyTorch's default picks (a one-call
        profile): whether stock diffusers already gets cuDNN attention here, or FA2 at half its speed."""
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = {"FLASH": SDPBackend.FLASH_ATTENTION, "CUDNN": SDPBackend.CUDNN_ATTENTION,
                    "EFFICIENT": SDPBackend.EFFICIENT_ATTENTION, "MATH": SDPBackend.MATH, "default": None}
        if not self.rehearsal:
            backends.pop("MATH")  # minutes at this size on a GPU, and never chosen there
        heads, tokens, dim = (2, 256, 64) if self.rehearsal else (FLUX_HEADS, FLUX_TOKENS, FLUX_HEAD_DIM)
        found: dict[str, Any] = {}
        for batch in (1, 4):
            q, k, v = (torch.randn(batch, heads, tokens, dim, device=self.device, dtype=torch.bfloat16)
                       for _ in range(3))  # fmt: skip
            flops = 4 * batch * heads * tokens**2 * dim
            results: dict[str, Any] = {"shape": [batch, heads, tokens, dim]}
            for name, backend in backends.items():
                def call(q: Any = q, k: Any = k, v: Any = v) -> Any:
                    return F.scaled_dot_product_attention(q, k, v)

                try:
                    if backend is None:
                        ms = time_ms(call, self.device)
                        top = top_kernels(profiled(call, self.device), self.device, count=3)
                        results["default_kernel"] = top[0]["name"] if top else None
                    else:
                        with sdpa_kernel([backend]):
                            ms = time_ms(call, self.device)
                    results[name] = {"ms": figure(ms), "tflops": figure(flops / ms / 1e9)}
                except Exception as exc:  # noqa: BLE001 - a backend this build or shape does not support
                    first_line = (str(exc).strip().splitlines() or [""])[0]
                    results[name] = {"error": f"{type(exc).__name__}: {first_line[:200]}"}
            found[str(batch)] = results
            self.say(f"SDPA {results['shape']}: " + ", ".join(
                f"{name} {r.get('tflops', 'n/a')}" for name, r in results.items() if isinstance(r, dict))
                + f" TF/s; the default runs {results.get('default_kernel')}")  # fmt: skip
        return found

    def copy(self) -> dict[str, Any]:
        import torch

        gib = 1 / 16 if self.rehearsal else 4
        source = torch.rand(int(gib * 2**30) // 4, device=self.device)
        target = torch.empty_like(source)
        ms = time_ms(lambda: target.copy_(source), self.device)
        moved = 2 * source.numel() * 4  # read and written
        found = {"gib": gib, "ms": figure(ms), "tb_per_s": figure(moved / ms / 1e9)}
        where = "host" if self.rehearsal else "device-to-device"
        self.say(f"{where} copy of {gib} GiB: {found['tb_per_s']} TB/s (bytes read + written)")
        return found


def nvidia_smi() -> str | None:
    query = "name,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,power.limit,driver_version"
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi unavailable: {exc}"
    return done.stdout.strip() or done.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"),
                        help="folder for preflight.json")  # fmt: skip
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="run what can run on CPU, at tiny sizes (no CUDA device needed)")  # fmt: skip
    args = parser.parse_args()
    return Preflight(out=Path(args.out), rehearsal=args.cpu_rehearsal).run()


if __name__ == "__main__":
    sys.exit(main())
