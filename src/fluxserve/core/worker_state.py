"""What a worker tells the store it is doing; /ready and /metrics read it back: one definition for all."""

from __future__ import annotations

import enum


class WorkerState(str, enum.Enum):
    # Loading is not a state: a worker reports nothing until its model is loaded.
    WARMING = "warming"  # running the warm-up shapes: it claims nothing yet
    READY = "ready"  # claiming and running jobs (busy or idle: the stats' `busy` says which)
    STOPPING = "stopping"  # its last report: it claims nothing more and has delivered what it ran
