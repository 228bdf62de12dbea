"""Load a model folder with diffusers, never touching the network (engine/model_check.py checks it first)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fluxserve.core.errors import ModelLoadError
from fluxserve.engine.placement import Placement

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Loading progress bars and torchvision fallback notices are noise in a server log."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_flux_pipeline(root: Path, placement: Placement, move: bool = True, **components: Any) -> Any:
    """FluxPipeline from a folder; `components` (e.g. a transformer loaded from one file) replace its own.
    move=False leaves it in CPU memory (model offload then moves each component to the GPU while it runs)."""
    quiet_libraries()
    from diffusers import FluxPipeline

    try:
        pipe = FluxPipeline.from_pretrained(root, dtype=placement.dtype, local_files_only=True, **components)
    except Exception as exc:  # diffusers raises many kinds; the operator needs one clear line
        raise ModelLoadError(f"could not load {root}: {type(exc).__name__}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    log_components(root, pipe.components, placement)
    return pipe.to(placement.device) if move else pipe


def log_components(root: Path, components: dict[str, Any], placement: Placement) -> None:
    """One line per component: where it came from, its dtype and size, so operators see what they serve."""
    for name, component in components.items():
        if component is None:
            continue
        parameters = getattr(component, "parameters", None)
        if parameters is None:
            log.info("loaded %-15s %s from %s", name, type(component).__name__, root / name)
            continue
        count = sum(p.numel() for p in parameters())
        size_mb = sum(p.numel() * p.element_size() for p in parameters()) / 2**20
        log.info("loaded %-15s %s from %s: %s, %.1fM parameters, %.0f MB, on %s", name, type(component).__name__,
                 root / name, placement.dtype_name, count / 1e6, size_mb, placement.device)  # fmt: skip
