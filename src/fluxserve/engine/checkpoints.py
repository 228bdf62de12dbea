"""Single-file transformer checkpoints, as users download them: Black Forest Labs' original format
(`flux1-schnell.safetensors`), diffusers' format, and fp8 (e4m3fn) files as ComfyUI users have them.

The format is read from the file's header (tensor names, dtypes, shapes) before anything is loaded, so a
truncated file, another model family, FLUX.1 [dev], or a width that does not match the base config each give
one clear ModelLoadError naming what was seen and what was expected.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.engine.loading import Placement
from fluxserve.core.errors import ModelLoadError

log = logging.getLogger(__name__)

COMFY_PREFIX = "model.diffusion_model."
# diffusers' BFL -> diffusers converter hard-codes the real model's width.
BFL_CONVERTER_WIDTH = 3072
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
OTHER_FAMILIES = (
    ("input_blocks.", "a Stable Diffusion 1.x/2.x/XL UNet"),
    ("joint_blocks.", "a Stable Diffusion 3 MMDiT"),
    ("encoder.down.", "a VAE"),
    ("encoder.down_blocks.", "a VAE"),
    ("encoder.block.", "a T5 text encoder"),
    ("text_model.encoder.", "a CLIP text encoder"),
)
EXPECTED = ("a FLUX.1 [schnell] transformer in Black Forest Labs' format (double_blocks.*, single_blocks.*, "
            "img_in.*) or diffusers' format (transformer_blocks.*, x_embedder.*)")  # fmt: skip


@dataclass(frozen=True)
class CheckpointInfo:
    format: str  # "bfl" | "diffusers"
    prefix: str  # COMFY_PREFIX when the file is a ComfyUI-style whole checkpoint, else ""
    dtypes: frozenset[str]
    width: int  # the transformer's inner dimension

    @property
    def fp8(self) -> bool:
        return bool(self.dtypes & set(FP8_DTYPES))

    def describe(self) -> str:
        name = {"bfl": "Black Forest Labs' format", "diffusers": "diffusers' format"}[self.format]
        extra = " (ComfyUI prefix)" if self.prefix else ""
        return f"{name}{extra}, {'/'.join(sorted(self.dtypes))}, width {self.width}"


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors header, checked against the file's size (a truncated download fails here)."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 * 2**20:
                raise ValueError("header length is implausible")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelLoadError(f"{path} is not a readable .safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    end = 8 + length + max((t["data_offsets"][1] for t in header.values()), default=0)
    size = path.stat().st_size
    if size < end:
        raise ModelLoadError(f"{path} is truncated: its header describes {end} bytes, the file has {size}")
    return header


def identify(path: Path, header: dict[str, Any]) -> CheckpointInfo:
    names = list(header)
    prefix = COMFY_PREFIX if any(n.startswith(COMFY_PREFIX) for n in names) else ""
    keys = {n[len(prefix) :]: header[n] for n in names if n.startswith(prefix)}
    if any(k.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for k in keys):
        raise ModelLoadError(f"{path} has a guidance embedding: it is FLUX.1 [dev], not FLUX.1 [schnell]")
    dtypes = frozenset(t["dtype"] for t in keys.values())
    if "img_in.weight" in keys and any(k.startswith("double_blocks.") for k in keys):
        return CheckpointInfo("bfl", prefix, dtypes, keys["img_in.weight"]["shape"][0])
    if "x_embedder.weight" in keys and any(k.startswith("transformer_blocks.") for k in keys):
        return CheckpointInfo("diffusers", prefix, dtypes, keys["x_embedder.weight"]["shape"][0])
    seen = next((what for marker, what in OTHER_FAMILIES if any(marker in n for n in names)), None)
    sample = ", ".join(names[:3])
    raise ModelLoadError(
        f"{path} is not a FLUX transformer checkpoint: it looks like {seen or 'an unknown model'} "
        f"(tensors such as {sample}); expected {EXPECTED}"
    )


def inspect_checkpoint(path: Path, base_transformer: Path) -> CheckpointInfo:
    info = identify(path, read_header(path))
    config = json.loads((base_transformer / "config.json").read_text())
    width = config["num_attention_heads"] * config["attention_head_dim"]
    if info.width != width:
        raise ModelLoadError(
            f"{path} is a transformer of width {info.width}, but {base_transformer}/config.json describes "
            f"width {width}: the file and --model-base are different models"
        )
    if info.format == "bfl" and info.width != BFL_CONVERTER_WIDTH:
        raise ModelLoadError(
            f"{path} is in Black Forest Labs' format at width {info.width}; diffusers converts that format "
            f"only at the real model's width {BFL_CONVERTER_WIDTH}. Save it in diffusers' format instead."
        )
    return info


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
