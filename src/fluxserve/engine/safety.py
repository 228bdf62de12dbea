"""The safety checker: diffusers' StableDiffusionSafetyChecker over CLIP features, run on a whole batch.

A flagged image is replaced by a black one and reported in has_nsfw_concepts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxserve.engine.loading import Placement
from fluxserve.errors import ModelLoadError

log = logging.getLogger(__name__)


def locate(path: Path) -> tuple[Path, Path] | None:
    """(checker folder, feature extractor folder), in the pipeline layout (safety_checker/ and
    feature_extractor/ subfolders) or the CompVis/stable-diffusion-safety-checker layout (both at the root)."""
    if (path / "safety_checker" / "config.json").is_file():
        return path / "safety_checker", path / "feature_extractor"
    if (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file():
        return path, path
    return None


def require_safety_checker(path: Path) -> tuple[Path, Path]:
    found = locate(path)
    if found is None:
        raise ModelLoadError(
            f"no safety checker at {path}: expected safety_checker/ and feature_extractor/ folders "
            "(or a CompVis/stable-diffusion-safety-checker folder). Point --safety-checker at one, "
            "or pass --safety-checker none to run without (has_nsfw_concepts is then always false)."
        )
    return found


@dataclass
class SafetyChecker:
    checker: Any
    feature_extractor: Any
    placement: Placement

    @classmethod
    def load(cls, path: Path, placement: Placement) -> SafetyChecker:
        checker_dir, extractor_dir = require_safety_checker(path)
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(
            checker_dir, dtype=placement.dtype, local_files_only=True
        ).to(placement.device)
        extractor = CLIPImageProcessor.from_pretrained(extractor_dir, local_files_only=True)
        log.info("loaded safety checker from %s", checker_dir)
        return cls(checker=checker.eval(), feature_extractor=extractor, placement=placement)

    def check(self, images: list[Any]) -> tuple[list[Any], list[bool]]:
        """Flags per image; flagged images come back black, the others untouched."""
        import numpy as np
        import torch
        from PIL import Image

        clip_input = self.feature_extractor(images, return_tensors="pt").pixel_values
        clip_input = clip_input.to(self.placement.device, self.placement.dtype)
        # The checker blanks flagged images in the array it is given: hand it a throwaway copy.
        scratch = np.stack([np.asarray(img, dtype=np.float32) / 255.0 for img in images])
        with torch.inference_mode():
            _, flags = self.checker(images=scratch, clip_input=clip_input)
        flags = [bool(f) for f in flags]
        checked = [Image.new("RGB", img.size) if flagged else img for img, flagged in zip(images, flags)]
        return checked, flags
