"""What each fluxserve process's exit status means; the supervisor decides on restarts from it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The command ran and was refused (e.g. `keys revoke` of a key that does not exist).
    REFUSED = 1
    # Bad configuration (model folder, port in use, GPU plan): restarting would only fail again.
    CONFIG_ERROR = 2
    # A worker whose device is suspect (a CUDA error): restart it, on a fresh process and context.
    FATAL_WORKER = 3
    # `verify`: the image carries none of the provenance marks.
    NO_MARKS = 4
