"""`fluxserve make-tiny-model`: a one-shot process that writes tiny random models for demos and tests."""

from __future__ import annotations

from pathlib import Path

from fluxserve.processes.exit_codes import ExitCode


def make_tiny_model(target: Path, redux: Path | None) -> int:
    from fluxserve.engine.loading import quiet_libraries
    from fluxserve.engine.tiny import build_tiny_flux, build_tiny_redux

    quiet_libraries()
    build_tiny_flux(target)
    print(f"tiny FLUX.1 [schnell] model written to {target}")
    if redux:
        build_tiny_redux(redux)
        print(f"tiny Redux prior written to {redux}")
    return ExitCode.OK
