"""Headless Chromium (Debian's, driven by playwright-core under Node) for a test: a script, a JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"


def run_page_script(script: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run tests/js/<script> under Node: the last JSON line it printed. Never skipped: `make test` sets up."""
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if node is None or chromium is None:
        pytest.fail("node or chromium is missing: run `make test` (scripts/install-browser.sh, node-deps)")
    if not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: run `make node-deps`")
    out = subprocess.run([node, str(JS_DIR / script), *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
