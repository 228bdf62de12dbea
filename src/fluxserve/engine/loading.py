"""Check a model folder before loading it, then load it with diffusers, never touching the network.

A folder that is incomplete or not FLUX.1 [schnell] gives one ModelLoadError listing every problem,
so an operator fixes them all at once instead of one stack trace at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.core.settings import EngineSettings
from fluxserve.core.errors import ModelLoadError

log = logging.getLogger(__name__)

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
    from fluxserve.engine.checkpoints import identify, read_header

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


@dataclass(frozen=True)
class Placement:
    device: str
    dtype_name: str

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)

    def synchronize(self) -> None:
        """Wait for the work queued on the device (a no-op on CPU, where every call is synchronous)."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def describe(self) -> str:
        if self.device != "cuda":
            return self.device
        import torch

        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"


def resolve_placement(device: str, dtype: str) -> Placement:
    import torch

    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device == "cuda" and not cuda:
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return Placement(device=device, dtype_name=dtype)


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
