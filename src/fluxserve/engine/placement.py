"""Where the model runs: the device and dtype, resolved once from the operator's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fluxserve.core.errors import ModelLoadError


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
