"""The `fluxserve` command: flags and environment become Settings here, once, and each command is dispatched."""
