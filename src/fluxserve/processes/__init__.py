"""One module per OS process fluxserve runs (API, worker, supervisor, upkeep): wiring only."""
