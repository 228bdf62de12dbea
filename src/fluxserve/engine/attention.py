"""Which scaled-dot-product-attention kernel the accelerated levels run, chosen explicitly.

PyTorch's own heuristic picks cuDNN on Hopper only with a recent enough bundled cuDNN, else FlashAttention-2, which
runs Flux's attention at about half cuDNN's rate (pytorch/pytorch#142132: 329 vs 631 TFLOP/s on an H100). So on
CUDA both candidates are timed once at load, at the model's own attention shape, and the faster one is used; the
choice and both timings are logged and reported. diffusers' attention dispatch does the switching.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# fluxserve's names -> diffusers' AttentionBackendName values.
BACKENDS = {"cudnn": "_native_cudnn", "flash": "_native_flash", "efficient": "_native_efficient",
            "math": "_native_math"}  # fmt: skip
CANDIDATES = ("cudnn", "flash")
# 1024x1024 (4096 image tokens) plus schnell's 256 text tokens: the shape most requests run.
TOKENS = 4096 + 256


def choose_backend(transformer: Any, timer: Any = None) -> tuple[str, str]:
    """(backend name, why), the faster candidate at the transformer's attention shape."""
    config = transformer.config
    shape = (1, config.num_attention_heads, TOKENS, config.attention_head_dim)
    timer = timer or time_backend
    timings: dict[str, float] = {}
    for name in CANDIDATES:
        try:
            timings[name] = timer(name, shape)
        except Exception as exc:  # noqa: BLE001 - a kernel this GPU or build lacks is simply not a candidate
            log.info("attention: %s unavailable here: %s", name, str(exc).splitlines()[0][:200] if str(exc) else exc)
    if not timings:
        raise RuntimeError("neither cuDNN nor flash SDPA runs here")
    best = min(timings, key=timings.__getitem__)
    measured = ", ".join(f"{name} {ms:.3f} ms" for name, ms in timings.items())
    return best, f"fastest at {shape} ({measured})"


def time_backend(name: str, shape: tuple[int, ...], repeats: int = 10) -> float:
    """Milliseconds per call of diffusers' dispatch for this backend, on CUDA, random bf16 inputs."""
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    # diffusers' layout is (batch, tokens, heads, head_dim).
    q, k, v = (torch.randn(shape[0], shape[2], shape[1], shape[3], device="cuda", dtype=torch.bfloat16)
               for _ in range(3))  # fmt: skip
    for _ in range(3):
        dispatch_attention_fn(q, k, v, backend=BACKENDS[name])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        dispatch_attention_fn(q, k, v, backend=BACKENDS[name])
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats
