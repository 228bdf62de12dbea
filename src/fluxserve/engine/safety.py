"""The safety checker: diffusers' StableDiffusionSafetyChecker over CLIP features, run on a whole batch.

The engine's path is `has_nsfw_concepts(pixels)`: CLIP preprocessing, the checker and its concept scores, all
on the device of the uint8 pixels (images.to_pixels' output), then one host transfer of the flags. The caller
blanks flagged images itself (`pixels[flags] = 0`) before making PIL images. `check(pil_images)` is stock
diffusers (CLIPImageProcessor on the CPU, then StableDiffusionSafetyChecker.forward): the benchmark's baseline
and the tests' reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxserve.core.errors import ModelLoadError
from fluxserve.engine.placement import Placement

log = logging.getLogger(__name__)

# The extractor's `resample` (a PIL filter number) -> the F.interpolate mode that reproduces it with
# antialias=True: torch's antialiased kernels are ports of PIL's (support widened by the downscale factor,
# bicubic with a = -0.5). Without antialias torch would use a = -0.75 and alias at 1024 -> 224.
INTERPOLATION = {2: "bilinear", 3: "bicubic"}


def locate(path: Path) -> tuple[Path, Path] | None:
    """(checker folder, feature extractor folder), in the pipeline layout (safety_checker/ and
    feature_extractor/ subfolders) or the CompVis/stable-diffusion-safety-checker layout (both at the
    root)."""
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


def size_entry(size: Any, key: str) -> int | None:
    """One entry of an extractor's size: a dict in older transformers, a SizeDict in newer ones."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def per_channel(values: Any) -> tuple[float, ...]:
    """image_mean / image_std: a value per RGB channel, or one float for all three."""
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else (float(values),) * 3


@dataclass(frozen=True)
class ClipPreprocessing:
    """CLIPImageProcessor's steps, with the values read from its config, as tensor ops on the pixels' device:
    resize (shortest edge, or an exact size), center crop, rescale, normalise."""

    resize: int | tuple[int, int]  # the shortest edge's new length, or (height, width)
    mode: str
    crop: tuple[int, int] | None
    rescale_factor: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def of(cls, extractor: Any) -> ClipPreprocessing:
        # transformers' own default when a config names no filter.
        resample = 2 if extractor.resample is None else int(extractor.resample)
        if not extractor.do_resize or resample not in INTERPOLATION:
            raise ModelLoadError(
                f"the safety checker's feature extractor (do_resize={extractor.do_resize}, "
                f"resample={resample}) is not supported: fluxserve reproduces a resize with resample in "
                f"{sorted(INTERPOLATION)} only"
            )
        shortest, height, width = (
            size_entry(extractor.size, key) for key in ("shortest_edge", "height", "width")
        )
        resize: int | tuple[int, int]
        if shortest and not size_entry(extractor.size, "longest_edge"):
            resize, smallest = shortest, (shortest, shortest)
        elif height and width:
            resize = smallest = (height, width)
        else:
            raise ModelLoadError(
                f"the safety checker's feature extractor size {extractor.size!r} is not supported"
            )
        crop = None
        if extractor.do_center_crop:
            crop_height, crop_width = (
                size_entry(extractor.crop_size, key) or 0 for key in ("height", "width")
            )
            if not 0 < crop_height <= smallest[0] or not 0 < crop_width <= smallest[1]:
                raise ModelLoadError(
                    f"the safety checker's crop {extractor.crop_size!r} does not fit its resize"
                )
            crop = (crop_height, crop_width)
        return cls(
            resize=resize, mode=INTERPOLATION[resample], crop=crop,
            rescale_factor=float(extractor.rescale_factor) if extractor.do_rescale else None,
            mean=per_channel(extractor.image_mean) if extractor.do_normalize else None,
            std=per_channel(extractor.image_std) if extractor.do_normalize else None,
        )  # fmt: skip

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' get_resize_output_image_size(default_to_square=False): the long edge is truncated."""
        if not isinstance(self.resize, int):
            return self.resize
        if width <= height:
            return int(self.resize * height / width), self.resize
        return self.resize, int(self.resize * width / height)

    def __call__(self, pixels: Any, dtype: Any) -> Any:
        """(N, H, W, 3) uint8 -> (N, 3, crop height, crop width) checker input in `dtype`, on the pixels'
        device."""
        import torch
        import torch.nn.functional as F

        # interpolate has no uint8 kernel on CUDA: one NCHW float32 copy, on the device only (microseconds of
        # HBM bandwidth at 1024x1024); the host never builds or receives a float image.
        images = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        size = self.resized_size(*images.shape[-2:])
        # PIL resizes in two passes, width then height, each rounded half up to uint8 and clipped (bicubic
        # lobes overshoot): one 2D pass in float differs from it by up to 20 levels on sharp edges. A pass
        # that keeps an edge's length is exact (weights 0, 1, 0).
        for step in ((images.shape[-2], size[1]), size):
            images = F.interpolate(images, size=step, mode=self.mode, antialias=True, align_corners=False)
            images = images.add_(0.5).floor_().clamp_(0, 255)
        if self.crop is not None:
            # transformers' center_crop: the offsets are floored, as (size - crop) // 2.
            top, left = (size[0] - self.crop[0]) // 2, (size[1] - self.crop[1]) // 2
            images = images[:, :, top : top + self.crop[0], left : left + self.crop[1]]
        images = images.contiguous()  # the compact checker input, (N, 3, 224, 224), rescaled in place below
        if self.rescale_factor is not None:
            images.mul_(self.rescale_factor)
        if self.mean is not None and self.std is not None:
            # Python floats, a channel at a time: mean and std tensors would be two more host-to-device copies
            for channel, (mean, std) in enumerate(zip(self.mean, self.std)):
                images[:, channel].sub_(mean).div_(std)
        return images.to(dtype)


def concept_flags(checker: Any, clip_input: Any) -> Any:
    """StableDiffusionSafetyChecker.forward's decision, vectorised on the checker's device: (N,) bools.

    forward loops over images and concepts on the host (a .cpu() and ~20 .item() per image); this is the
    logic of its forward_onnx, plus forward's rounding. forward rounds each score to 3 decimals before `> 0`,
    forward_onnx does not (its round is commented out), so the two disagree on scores in (0, 0.0005]. We keep
    forward's rounding, the checker's reference behaviour: torch.round(decimals=3) is numpy's (times 1000,
    round half to even, divide, in float32), and the scores are computed in float32 from the same cosines as
    forward's (checker dtype, then float32), so the flags are forward's, bit for bit, for the same clip_input.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    image_embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
    special = cosine_distance(image_embeds, checker.special_care_embeds).float()
    special = special - checker.special_care_embeds_weights.float()
    # forward raises later special concepts' adjustment once one fires; that cannot undo "some special
    # concept fired", which is all that feeds the concept scores: +0.01 on every concept's margin.
    special_care = torch.round(special, decimals=3).gt(0).any(dim=1, keepdim=True)
    concepts = cosine_distance(image_embeds, checker.concept_embeds).float()
    concepts = concepts - checker.concept_embeds_weights.float() + special_care * 0.01
    return torch.round(concepts, decimals=3).gt(0).any(dim=1)


@dataclass
class SafetyChecker:
    checker: Any
    feature_extractor: Any
    placement: Placement
    preprocessing: ClipPreprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.preprocessing = ClipPreprocessing.of(self.feature_extractor)

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

    def clip_input(self, pixels: Any) -> Any:
        """(N, H, W, 3) uint8 pixels -> the checker's input, on the checker's device and in its dtype."""
        return self.preprocessing(pixels.to(self.checker.device), self.checker.dtype)

    def has_nsfw_concepts(self, pixels: Any) -> list[bool]:
        """A flag per image of (N, H, W, 3) uint8 pixels (images.to_pixels' output), computed on the device;
        one transfer to the host, of the N flags. The pixels are not touched: blank flagged ones with
        `pixels[flags] = 0`."""
        import torch

        with torch.inference_mode():
            return concept_flags(self.checker, self.clip_input(pixels)).tolist()

    def check(self, images: list[Any]) -> tuple[list[Any], list[bool]]:
        """Stock diffusers, on PIL images: flags per image; flagged images come back black, the others
        untouched."""
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


def check_safety(checker: SafetyChecker, pixels: Any, checked: list[bool]) -> list[bool]:
    """One checker call over the images whose jobs asked for it; flagged images are blacked out in place, on
    the device, before anything reaches the host. A flag per image, False for those not checked."""
    rows = [i for i, wanted in enumerate(checked) if wanted]
    subset = pixels if len(rows) == len(checked) else pixels[rows]
    flags = [False] * len(checked)
    for row, flagged in zip(rows, checker.has_nsfw_concepts(subset)):
        flags[row] = flagged
    if any(flags):
        pixels[flags] = 0
    return flags
