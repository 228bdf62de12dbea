"""The HTTP layer never imports torch: checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers")


def test_api_imports_no_torch():
    code = (
        "import sys\n"
        "import fluxserve.api.app, fluxserve.api.routes.run, fluxserve.store.sqlite, fluxserve.blobs.local\n"
        "import fluxserve.cli.main, fluxserve.core.settings, fluxserve.core.jobs\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_importing_the_package_has_no_side_effects(tmp_path):
    code = "import fluxserve, fluxserve.api.app, fluxserve.processes.api_process; import os; print(sorted(os.listdir('.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"
