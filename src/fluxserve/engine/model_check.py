"""Torch-free checks of a model before it is loaded: the CLI's pre-flight and the engine's first step.

A folder that is incomplete or not FLUX.1 [schnell] gives one ModelLoadError listing every problem, so an
operator fixes them all at once instead of one stack trace at a time. A single-file transformer checkpoint, as
users download them (Black Forest Labs' original format `flux1-schnell.safetensors`, diffusers' format, fp8
(e4m3fn) files as ComfyUI users have them), is identified from its safetensors header (tensor names,
dtypes, shapes) before anything is loaded: a truncated file, another model family, FLUX.1 [dev], or a width
that does not match the base config each give one clear ModelLoadError naming what was seen and what was
expected.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.core.errors import ModelLoadError
from fluxserve.core.settings import EngineSettings

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model")

# component -> the config file it must have, and whether it holds weights.
COMPONENTS: dict[str, tuple[str, bool]] = {
    "transformer": ("config.json", True),
    "vae": ("config.json", True),
    "text_encoder": ("config.json", True),
    "text_encoder_2": ("config.json", True),
    "tokenizer": ("", False),
    "tokenizer_2": ("", False),
    "scheduler": ("scheduler_config.json", False),
}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _component_problems(root: Path, name: str, config_file: str, has_weights: bool) -> list[str]:
    folder = root / name
    if not folder.is_dir():
        return [f"{name}/ is missing"]
    files = [p.name for p in folder.iterdir()]
    if config_file and config_file not in files:
        return [f"{name}/{config_file} is missing"]
    if not config_file and not any(f in files for f in TOKENIZER_FILES):
        return [f"{name}/ has no tokenizer file (one of {', '.join(TOKENIZER_FILES)})"]
    if has_weights and not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        return [f"{name}/ has no weights (*.safetensors or *.bin)"]
    return []


def _schnell_problems(root: Path) -> list[str]:
    """Problems that make a complete FLUX folder the wrong model (e.g. FLUX.1 [dev])."""
    problems = []
    transformer = _read_json(root / "transformer" / "config.json") or {}
    if transformer.get("_class_name") not in (None, "FluxTransformer2DModel"):
        problems.append(f"transformer is a {transformer['_class_name']}, not a FluxTransformer2DModel")
    if transformer.get("guidance_embeds"):
        problems.append("transformer has a guidance embedding: this is FLUX.1 [dev], not FLUX.1 [schnell]")
    scheduler = _read_json(root / "scheduler" / "scheduler_config.json") or {}
    if scheduler.get("_class_name") not in (None, "FlowMatchEulerDiscreteScheduler"):
        problems.append(f"scheduler is a {scheduler['_class_name']}, not a FlowMatchEulerDiscreteScheduler")
    return problems


def check_model_dir(root: Path, transformer_weights: bool = True) -> list[str]:
    """Every reason this folder cannot be served as FLUX.1 [schnell]; empty when it can.
    transformer_weights=False: the transformer comes from a single file, its folder needs only config.json."""
    if not root.is_dir():
        return [f"model folder {root} does not exist"]
    index = _read_json(root / "model_index.json")
    if index is None:
        return [f"{root}/model_index.json is missing or unreadable: not a diffusers pipeline folder"]
    if index.get("_class_name") != "FluxPipeline":
        return [f"model_index.json names {index.get('_class_name')!r}, not 'FluxPipeline'"]
    problems = [f"model_index.json does not list {name}" for name in COMPONENTS if name not in index]
    for name, (config_file, has_weights) in COMPONENTS.items():
        has_weights = has_weights and (transformer_weights or name != "transformer")
        problems += _component_problems(root, name, config_file, has_weights)
    return problems or _schnell_problems(root)


def require_model(settings: EngineSettings) -> Path:
    """Check the model the settings name (folder, or single file + base folder); return the pipeline folder."""
    path = settings.model_path
    if not path.is_file():
        require_model_dir(path)
        return path
    if settings.model_base is None:
        raise ModelLoadError(
            f"--model {path} is a single transformer file; the VAE, text encoders, tokenizers and scheduler come "
            "from a diffusers folder: pass --model-base PATH (e.g. a FLUX.1-schnell folder; its transformer/ "
            "needs only config.json)"
        )
    require_model_dir(settings.model_base, transformer_weights=False)
    identify(path, read_header(path))
    return settings.model_base


def require_model_dir(root: Path, transformer_weights: bool = True) -> None:
    problems = check_model_dir(root, transformer_weights)
    if problems:
        lines = "\n  - ".join(problems)
        raise ModelLoadError(
            f"{root} is not a usable FLUX.1 [schnell] model folder "
            f"(expected the black-forest-labs/FLUX.1-schnell diffusers layout):\n  - {lines}"
        )


# -- single-file transformer checkpoints -------------------------------------------------------------

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
