"""Domain errors. They say what went wrong; the HTTP layer decides the status code."""

from __future__ import annotations


class FluxserveError(Exception):
    """Base class of every error fluxserve raises on purpose."""


class InputError(FluxserveError):
    """A request field is valid JSON but not acceptable (e.g. too many pixels)."""

    def __init__(self, field: str, message: str, kind: str = "value_error", location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.kind = kind
        self.location = location  # body | query | header, as in FastAPI's own 422s


class Unavailable(FluxserveError):
    """This server was started without what the request needs (e.g. no Redux model)."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class StoreBusy(FluxserveError):
    """The job store stayed locked (another process's transaction) past its retry budget: this one operation
    failed, and the caller goes on (a worker keeps its process and claims again later)."""


class NotFound(FluxserveError):
    """No job, file or endpoint of that name."""


class ModelLoadError(FluxserveError):
    """The model folder is missing, incomplete, or not a FLUX.1 [schnell] model."""


class GenerationError(FluxserveError):
    """The model failed on one job; that job fails, the worker goes on."""


class JobCancelled(FluxserveError):
    """The job was cancelled (or taken from this worker) while it ran; raised between denoising steps."""


# Errors after which the device (and so the process using it) cannot be trusted with another job.
DEVICE_FATAL_MARKERS = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "NCCL error")


def is_device_fatal(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in DEVICE_FATAL_MARKERS)
