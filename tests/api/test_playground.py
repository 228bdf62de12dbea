"""The web playground in a real headless Chromium (Debian's, driven by Playwright): generate, see the image,
see a 422 next to its field; an uploaded page cannot read its key; /docs works under its CSP. Never skipped:
`make test` installs Chromium and playwright-core."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.abuse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "playground.mjs"
SCREENSHOT_DIR = ROOT / "test-artifacts"


def test_playground_in_chromium(fake_server):
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if node is None or chromium is None:
        pytest.fail("node or chromium is missing: run `make test` (scripts/install-browser.sh, make node-deps)")
    if not (ROOT / "tests" / "js" / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: run `make node-deps`")
    SCREENSHOT_DIR.mkdir(exist_ok=True)
    screenshot = SCREENSHOT_DIR / "playground.png"
    out = subprocess.run([node, str(SCRIPT), fake_server.url, str(screenshot)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nplayground screenshot: {screenshot}")
    assert seen["fields"][:1] == ["prompt"] and "acceleration" in seen["fields"]
    assert seen["stepsDefault"] == "4"
    assert seen["imageLoaded"] and seen["caption"].startswith("seed 7 · 512×512")
    assert seen["status"] == "Done" and seen["history"] == 1
    assert "curl -s" in seen["snippet"] and '"prompt": "a lighthouse at dusk"' in seen["snippet"]
    assert seen["fieldError"] == "Input should be less than or equal to 12"
    assert seen["reduxFields"][0] == "image_url"
    assert seen["external"] == [], "every asset comes from fluxserve"
    assert seen["keyInSessionStorage"] == "fsk_victim:the-secret" and seen["keyInLocalStorage"] is None
    assert set(seen["attackUrls"]) == {"html", "svg"}
    assert seen["stolen"] == [], "an uploaded page ran script on the playground's origin"
    assert seen["downloads"] == 2, "uploaded HTML and SVG arrive as downloads, never as pages"
    assert seen["docsFetchedSpec"], "Swagger UI ran under its CSP and fetched /openapi.json"
    assert seen["cspViolations"] == [], "the playground and /docs run within their own policies"
    assert screenshot.stat().st_size > 10_000
