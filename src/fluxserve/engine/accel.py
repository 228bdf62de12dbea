"""Acceleration levels: named optimisations on the stock diffusers pipeline, switched per batch.

    none     stock diffusers: bf16, eager, PyTorch's default SDPA; bit-for-bit reproducible, and equal to
             FluxPipeline's own output for the same seeds
    regular  + fused QKV projections, channels-last VAE, an explicit attention backend, regional torch.compile
             (the transformer's repeated blocks and the VAE decoder, static shapes), CUDA graphs per shape
    high     + fp8 (float8 e4m3, per-row dynamic scales) for the transformer blocks' linear layers (torchao)

Each optimisation is prepared once at load; `Accelerator.level()` then puts the modules in the state a level asks
for. One decision picks the transformer copy a level runs (bf16, or its fp8 twin) and every in-place switch is set
on every copy, so what a level runs never depends on what ran before it.

Degrade, never die: an optimisation that cannot run here is skipped with its reason; one that fails to prepare is
skipped the same way; one that fails while a level warms up is dropped from that level (`Accelerator.drop`), and
the level still serves. `running()` reads the modules themselves to say what a level really runs with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fluxserve.core.settings import AccelSettings

log = logging.getLogger(__name__)

LEVELS = ("none", "regular", "high")

__all__ = ["LEVELS", "AccelSettings", "Accelerator", "Optimisation"]


class Optimisation:
    """One named switch. `prepare` runs once at load; `apply` puts the modules in this switch's on/off state for
    a level; `is_running` reads the modules to say whether it is in effect now."""

    name = ""
    levels: tuple[str, ...] = ()

    def unsupported(self, engine: Any, settings: AccelSettings) -> str | None:
        """Why this cannot run here, or None."""
        return None

    def prepare(self, engine: Any, settings: AccelSettings, accel: Accelerator) -> None: ...

    def apply(self, engine: Any, accel: Accelerator, on: bool) -> None: ...

    def is_running(self, engine: Any, accel: Accelerator) -> bool:
        return False

    def details(self) -> str | None:
        """What was chosen, for the start log and /ready (e.g. the attention backend and why)."""
        return None


@dataclass
class Accelerator:
    active: list[Optimisation] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # level -> the optimisations it runs with; `drop` removes one from one level.
    plan: dict[str, list[Optimisation]] = field(default_factory=lambda: {level: [] for level in LEVELS})
    dropped: dict[str, dict[str, str]] = field(default_factory=lambda: {level: {} for level in LEVELS})
    # The transformer's copies by name: "bf16" (the eager stock module) and, with fp8, "fp8".
    copies: dict[str, Any] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def prepare(cls, engine: Any, settings: AccelSettings | None = None) -> Accelerator:
        from fluxserve.engine.switches import OPTIMISATIONS

        settings = settings or AccelSettings()
        accel = cls(copies={"bf16": engine.pipe.transformer})
        for kind in OPTIMISATIONS:
            opt = kind()
            reason = "switched off by the operator" if opt.name in settings.disabled else None
            reason = reason or unsupported_reason(opt, engine, settings)
            if reason is None:
                try:
                    opt.prepare(engine, settings, accel)
                except Exception as exc:  # noqa: BLE001 - any failure here costs the switch, never the load
                    reason = f"failed to prepare: {explain(exc)}"
            if reason:
                accel.skipped[opt.name] = reason
                log.info("acceleration: %s skipped: %s", opt.name, reason)
                continue
            accel.active.append(opt)
            for level in opt.levels:
                accel.plan[level].append(opt)
            detail = f" ({opt.details()})" if opt.details() else ""
            log.info("acceleration: %s ready for %s%s", opt.name, ", ".join(opt.levels), detail)
        return accel

    def applied(self, level: str) -> list[str]:
        """The switches a level is planned to run with (what it really runs: `running`)."""
        return [opt.name for opt in self.plan[level]]

    def copy_for(self, level: str) -> Any:
        """The one place that decides which transformer copy a level runs."""
        wants_fp8 = any(opt.name == "fp8" for opt in self.plan[level])
        return self.copies["fp8" if wants_fp8 and "fp8" in self.copies else "bf16"]

    @contextlib.contextmanager
    def level(self, level: str, engine: Any = None) -> Iterator[None]:
        """Put every prepared optimisation in the state this level asks for (a no-op when it is already set)."""
        if level not in LEVELS:
            raise ValueError(f"unknown acceleration level {level!r}")
        if engine is not None and level != self.current:
            self.current = None  # a switch that fails half-way leaves no claim about the state
            engine.pipe.transformer = self.copy_for(level)
            planned = self.plan[level]
            for opt in self.active:  # in OPTIMISATIONS order: wrappers (CUDA graphs) come last
                opt.apply(engine, self, opt in planned)
            self.current = level
        yield

    def running(self, engine: Any, level: str) -> list[str]:
        """What this level really runs with, read from the modules after switching to it."""
        with self.level(level, engine):
            return [opt.name for opt in self.active if opt.is_running(engine, self)]

    def drop(self, level: str, name: str, reason: str) -> None:
        """Take one optimisation out of one level (it failed there); the level serves without it."""
        self.plan[level] = [opt for opt in self.plan[level] if opt.name != name]
        self.dropped[level][name] = reason
        self.current = None  # re-apply on the next switch
        log.warning("acceleration: %s dropped from %s: %s", name, level, reason)

    def riskiest(self, level: str) -> str | None:
        """The optimisation to drop first when a level fails (DROP_ORDER: the most hardware-specific first; fp8
        before compile, since eager fp8 is slower than bf16)."""
        from fluxserve.engine.switches import DROP_ORDER

        names = {opt.name for opt in self.plan[level]}
        return next((name for name in DROP_ORDER if name in names), None)

    def describe(self, engine: Any) -> dict[str, Any]:
        levels = {level: self.running(engine, level) for level in LEVELS}
        details = {opt.name: opt.details() for opt in self.active if opt.details()}
        dropped = {level: reasons for level, reasons in self.dropped.items() if reasons}
        return {"levels": levels, "skipped": dict(self.skipped), "dropped": dropped, "details": details}


def unsupported_reason(opt: Optimisation, engine: Any, settings: AccelSettings) -> str | None:
    try:
        return opt.unsupported(engine, settings)
    except Exception as exc:  # noqa: BLE001 - e.g. a broken torchao install: skip fp8, keep serving
        return f"unavailable: {explain(exc)}"


def explain(exc: BaseException) -> str:
    """One line for the log and /ready: the error's type and the first line of its root cause (torch wraps the
    real reason, e.g. a compiler's, in errors whose own message says little)."""
    root = exc
    while (inner := root.__cause__ or getattr(root, "inner_exception", None)) is not None and inner is not root:
        root = inner
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    message = f"{type(root).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")
    return message if root is exc else f"{type(exc).__name__} ({message})"
