"""Single-file transformer checkpoints loaded into a FluxTransformer2DModel, once engine/model_check.py has
identified the file's format from its header."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fluxserve.core.errors import ModelLoadError
from fluxserve.engine.model_check import CheckpointInfo, inspect_checkpoint
from fluxserve.engine.placement import Placement

log = logging.getLogger(__name__)


def load_state_dict(path: Path, info: CheckpointInfo, placement: Placement) -> dict[str, Any]:
    """The transformer's tensors; fp8 ones are widened to the serving dtype (the compute never runs in fp8)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if info.prefix:  # a ComfyUI checkpoint may carry its VAE and text encoders too: keep the transformer
        tensors = {k[len(info.prefix) :]: v for k, v in tensors.items() if k.startswith(info.prefix)}
    if info.fp8:
        tensors = {k: v.to(placement.dtype) if v.element_size() == 1 else v for k, v in tensors.items()}
    return tensors


def load_transformer(path: Path, base: Path, placement: Placement) -> Any:
    """A FluxTransformer2DModel from one file, its config from the base folder's transformer/."""
    info = inspect_checkpoint(path, base / "transformer")
    from diffusers import FluxTransformer2DModel

    state = load_state_dict(path, info, placement)
    try:
        transformer = FluxTransformer2DModel.from_single_file(
            state, config=str(base), subfolder="transformer", local_files_only=True, dtype=placement.dtype
        )
    except Exception as exc:
        raise ModelLoadError(f"could not load {path} ({info.describe()}): {type(exc).__name__}: {exc}") from exc
    log.info("transformer from single file %s: %s", path, info.describe())
    return transformer
