"""Image sizes: fal's presets, and rounding to what FLUX accepts.

Pure Python, shared by the API (to refuse sizes over the operator's cap with a 422) and the engine.
"""

from __future__ import annotations

# fal's IMAGE_SIZE_PRESETS, (width, height).
PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}

# FLUX packs 2x2 latent patches over a VAE that downsamples 8x: pixels must be multiples of 16.
MULTIPLE = 16


def round_to_multiple(pixels: int, multiple: int = MULTIPLE) -> int:
    """Nearest multiple (ties round up), never below one multiple."""
    return max(multiple, ((pixels + multiple // 2) // multiple) * multiple)


def resolve(width: int, height: int) -> tuple[int, int]:
    """The size FLUX will really produce for a requested size."""
    return round_to_multiple(width), round_to_multiple(height)
