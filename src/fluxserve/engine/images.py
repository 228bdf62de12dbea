"""Decoded VAE output -> uint8 pixels -> PIL images, the float work done on the decoded tensor's device.

diffusers' VaeImageProcessor.postprocess(decoded, "pil") copies the decoded images to the host and converts
them there, in float32 numpy: on a GPU, 15-25 ms of CPU per 1024x1024 image on the critical path. Here the
same arithmetic, in the same order and dtypes, runs where the tensor is, so the bytes are the same, and the
host only receives uint8 (a quarter of a float32 copy), in one transfer.
"""

from __future__ import annotations

from typing import Any


def to_pixels(decoded: Any) -> Any:
    """(N, 3, H, W) VAE output in [-1, 1] -> (N, H, W, 3) uint8, contiguous, on the decoded tensor's device.

    Byte for byte what FluxPipeline's VaeImageProcessor (do_normalize=True) gives from
    postprocess(decoded, output_type="pil"). Run it eagerly: a compiled (fused) version would skip the
    rounding to the decoded dtype between the multiply and the add, and the bytes would drift from diffusers'.
    """
    import torch

    # VaeImageProcessor.denormalize, in the decoded dtype (bf16 on a GPU), each op rounded as diffusers does.
    images = (decoded * 0.5 + 0.5).clamp(0, 1)
    # pt_to_numpy makes it float32 (NHWC), then numpy_to_pil does `(images * 255).round().astype("uint8")`:
    # the float32 product is the same IEEE operation here, and torch.round, like numpy's, rounds half to even.
    # The values are then whole numbers in [0, 255], so the uint8 cast is exact.
    images = images.permute(0, 2, 3, 1).float().mul_(255).round_()
    return images.to(torch.uint8, memory_format=torch.contiguous_format)


def to_pil(pixels: Any) -> list[Any]:
    """(N, H, W, 3) uint8 pixels -> N RGB PIL images: one device-to-host copy for the whole batch."""
    import torch
    from PIL import Image

    host = pixels
    if pixels.device.type == "cuda":
        # Pinned memory: the copy is one DMA, with no pageable staging buffer; then one wait for the batch.
        host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(pixels, non_blocking=True)
        torch.cuda.current_stream(pixels.device).synchronize()
    elif pixels.device.type != "cpu":
        host = pixels.cpu()
    # fromarray copies RGB rows into PIL's own storage (RGB is not a mode PIL maps over a buffer), so the
    # images do not hold on to the pinned block, which torch's host allocator hands out again.
    return [Image.fromarray(image) for image in host.numpy()]
