"""A low-cost preview of the current latents: a fixed linear map from FLUX's 16 latent channels to RGB, at the
latent resolution (1/8 of the image), as a small JPEG data: URI. No VAE decode: a 16x3 matrix per pixel.

The factors are ComfyUI's `latent_rgb_factors` for Flux (comfy/latent_formats.py), fitted on the latents the
transformer works in, i.e. after the VAE's shift and scale, which is what the denoising loop holds.
"""

from __future__ import annotations

import base64
import io
from typing import Any

LATENT_RGB_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
LATENT_RGB_BIAS = (-0.0329, -0.0718, -0.0851)
# Small images of a blurry approximation: quality beyond this only adds bytes to every step event.
JPEG_QUALITY = 70


def latent_rgb(latents: Any) -> Any:
    """(N, 16, h, w) latents -> (N, h, w, 3) uint8 pixels through the fixed projection, on the CPU."""
    import torch

    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(LATENT_RGB_BIAS, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("nchw,cr->nhwr", latents.float(), factors) + bias  # roughly [-1, 1]
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def latent_previews(pipe: Any, packed: Any, height: int, width: int) -> list[str]:
    """One JPEG data: URI per image row of the batch's packed latents, each (height/8) x (width/8)."""
    from PIL import Image

    # diffusers keeps the unpacking private to the pipeline; engine/sampling.decode calls it the same way.
    latents = pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)
    uris = []
    for pixels in latent_rgb(latents).numpy():
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=JPEG_QUALITY)
        uris.append("data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii"))
    return uris
