"""fluxserve: FLUX.1 [schnell] behind fal.ai's API, self-hosted."""

__version__ = "0.1.0"
