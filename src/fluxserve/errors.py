"""Domain errors. They say what went wrong; the HTTP layer decides the status code."""

from __future__ import annotations


class FluxserveError(Exception):
    """Base class of every error fluxserve raises on purpose."""


class InputError(FluxserveError):
    """A request field is valid JSON but not acceptable (e.g. too many pixels)."""

    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.kind = kind


class NotFound(FluxserveError):
    """No job, file or endpoint of that name."""


class ModelLoadError(FluxserveError):
    """The model folder is missing, incomplete, or not a FLUX.1 [schnell] model."""


class GenerationError(FluxserveError):
    """The model failed on one job; that job fails, the worker goes on."""
