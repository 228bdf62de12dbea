"""Acceleration levels as named, individually switchable optimisations on the stock diffusers pipeline.

    none     bf16, PyTorch SDPA attention (flash kernels on GPU), eager: the bit-for-bit reproducible level
    regular  + fused QKV projections, channels-last VAE, torch.compile of the transformer and VAE decoder
    high     + fp8 (float8 e4m3) weights and activations for the transformer's linear layers (torchao, Hopper+)

Each optimisation is prepared once at load and then switched on or off per batch by `Accelerator.level()`, so one
copy of the weights serves every level (fp8 keeps its own quantised copy of the transformer). Optimisations that
cannot run here (compile and fp8 on CPU, fp8 without torchao) are skipped with one log line; nothing fails.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LEVELS = ("none", "regular", "high")


@dataclass(frozen=True)
class AccelSettings:
    # Optimisations switched off by the operator, by name (e.g. {"compile"}).
    disabled: frozenset[str] = frozenset()
    # "auto": compile and fp8 only on CUDA. "on" forces them (tests, CPU experiments).
    compile: str = "auto"
    fp8: str = "auto"
    compile_mode: str = "max-autotune-no-cudagraphs"


class Optimisation:
    name = ""
    levels: tuple[str, ...] = ()

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        """Why this cannot run here, or None."""
        return None

    def prepare(self, engine: Any, settings: AccelSettings) -> None: ...

    def switch(self, engine: Any, on: bool) -> None: ...


class FusedQKV(Optimisation):
    """One matmul for Q, K and V instead of three (diffusers keeps both; a flag picks per level)."""

    name, levels = "fused_qkv", ("regular", "high")

    def prepare(self, engine: Any, settings: AccelSettings) -> None:
        engine.pipe.transformer.fuse_qkv_projections()

    def switch(self, engine: Any, on: bool) -> None:
        for module in attention_modules(engine.pipe.transformer):
            module.fused_projections = on


class ChannelsLastVAE(Optimisation):
    """NHWC convolutions in the VAE decoder: faster cuDNN kernels on GPU."""

    name, levels = "channels_last_vae", ("regular", "high")

    def switch(self, engine: Any, on: bool) -> None:
        import torch

        fmt = torch.channels_last if on else torch.contiguous_format
        engine.pipe.vae.to(memory_format=fmt)


class Compile(Optimisation):
    """torch.compile of the transformer and the VAE decoder; the eager modules stay for `none`."""

    name, levels = "compile", ("regular", "high")

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        if settings.compile == "auto" and engine.placement.device != "cuda":
            return "torch.compile is used on CUDA only (on CPU it costs minutes and gains little); --compile on forces it"
        return None

    def prepare(self, engine: Any, settings: AccelSettings) -> None:
        import torch

        pipe = engine.pipe
        self.eager = {"transformer": pipe.transformer, "decode": pipe.vae.decode}
        self.compiled = {
            "transformer": torch.compile(pipe.transformer, mode=settings.compile_mode, fullgraph=False),
            "decode": torch.compile(pipe.vae.decode, mode=settings.compile_mode, fullgraph=False),
        }

    def switch(self, engine: Any, on: bool) -> None:
        chosen = self.compiled if on else self.eager
        engine.pipe.transformer = chosen["transformer"]
        engine.pipe.vae.decode = chosen["decode"]


class Float8(Optimisation):
    """A float8 copy of the transformer (torchao dynamic activation + weight quantisation) for `high`."""

    name, levels = "fp8", ("high",)

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        import importlib.util

        import torch

        if settings.fp8 == "auto":
            if engine.placement.device != "cuda":
                return "fp8 needs a CUDA GPU (Ada or Hopper); --fp8 on forces it"
            if torch.cuda.get_device_capability() < (8, 9):
                return "fp8 needs compute capability 8.9+ (Ada, Hopper)"
        if importlib.util.find_spec("torchao") is None:
            return "fp8 needs torchao (pip install torchao)"
        return None

    def prepare(self, engine: Any, settings: AccelSettings) -> None:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

        self.bf16 = engine.pipe.transformer
        self.fp8 = copy.deepcopy(self.bf16)
        quantize_(self.fp8, Float8DynamicActivationFloat8WeightConfig())

    def switch(self, engine: Any, on: bool) -> None:
        engine.pipe.transformer = self.fp8 if on else self.bf16


OPTIMISATIONS: tuple[type[Optimisation], ...] = (FusedQKV, ChannelsLastVAE, Float8, Compile)


def attention_modules(transformer: Any) -> list[Any]:
    from diffusers.models.attention_processor import Attention

    found = [m for m in transformer.modules() if isinstance(m, Attention)]
    if not found:  # newer diffusers name their Flux attention module FluxAttention
        found = [m for m in transformer.modules() if hasattr(m, "fused_projections")]
    return found


@dataclass
class Accelerator:
    active: list[Optimisation] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def prepare(cls, engine: Any, settings: AccelSettings | None = None) -> Accelerator:
        settings = settings or AccelSettings()
        accel = cls()
        for kind in OPTIMISATIONS:
            opt = kind()
            reason = "switched off by the operator" if opt.name in settings.disabled else None
            reason = reason or opt.unsupported(engine, settings)
            if reason:
                accel.skipped[opt.name] = reason
                log.info("acceleration: %s skipped: %s", opt.name, reason)
                continue
            opt.prepare(engine, settings)
            accel.active.append(opt)
            log.info("acceleration: %s ready for %s", opt.name, ", ".join(opt.levels))
        return accel

    def applied(self, level: str) -> list[str]:
        return [opt.name for opt in self.active if level in opt.levels]

    @contextlib.contextmanager
    def level(self, level: str, engine: Any = None) -> Iterator[None]:
        """Switch every prepared optimisation on or off for this level (a no-op when it is already set)."""
        if level not in LEVELS:
            raise ValueError(f"unknown acceleration level {level!r}")
        if engine is not None and level != self.current:
            for opt in self.active:
                opt.switch(engine, level in opt.levels)
            self.current = level
        yield
