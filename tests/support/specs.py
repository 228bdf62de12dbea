"""The one spec factory: a small, valid text-to-image GenerationSpec with any field overridden."""

from __future__ import annotations

from typing import Any

from fluxserve.core.jobs import GenerationSpec

# The smallest spec every layer accepts: 64x64, one step, one image, the bit-exact level.
DEFAULTS: dict[str, Any] = {
    "kind": "text", "prompt": "p", "width": 64, "height": 64, "num_inference_steps": 1, "seed": 1,
    "num_images": 1, "guidance_scale": 3.5, "enable_safety_checker": True, "output_format": "jpeg",
    "sync_mode": False, "acceleration": "none", "base_url": "http://h",
}  # fmt: skip


def make_spec(**overrides: Any) -> GenerationSpec:
    return GenerationSpec(**{**DEFAULTS, **overrides})


SPEC = make_spec()
