"""One generator per image, so image k of a batch is the image a single request with seed + k would give."""

from __future__ import annotations

from typing import Any


def generators(seeds: list[int]) -> list[Any]:
    import torch

    # CPU generators: the initial noise is then the same on every device, so a seed reproduces anywhere.
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
