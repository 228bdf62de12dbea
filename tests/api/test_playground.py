"""The web playground in a real headless Chromium (Debian's, driven by Playwright): generate, see the image,
see a 422 next to its field; an uploaded page cannot read its key; /docs works under its CSP; its Python and
JS snippets, run with the real clients, reproduce the request (a Redux one with its upload too). Never
skipped: `make test` installs Chromium and playwright-core."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.abuse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "playground.mjs"
SCREENSHOT_DIR = ROOT / "test-artifacts"


@pytest.fixture
def redux_server(tmp_path):
    """The fake-engine server with the Redux endpoint on, so its snippet can run too."""
    server = start_live_server(make_settings(tmp_path / "server", redux_enabled=True), FakeEngine())
    yield server
    server.stop()


def run_snippet(kind: str, code: str, folder: Path) -> str:
    """A snippet as a user runs it: a file beside an input.png, FAL_KEY in the environment."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "input.png")
    if kind in ("python", "openai"):
        command = [sys.executable, "snippet.py"]
    else:
        (folder / "node_modules").symlink_to(ROOT / "tests" / "js" / "node_modules")
        command = [shutil.which("node") or "node", "snippet.mjs"]
    (folder / command[1]).write_text(code)
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=folder,
                         env={**os.environ, "FAL_KEY": "anything"})  # fmt: skip
    assert out.returncode == 0, f"the {kind} snippet failed:\n{code}\n{out.stderr[-3000:]}"
    return out.stdout


def test_playground_in_chromium(redux_server, tmp_path):
    fake_server = redux_server
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
    assert set(seen["snippets"]) == {"python", "javascript", "openai"}
    for kind, code in seen["snippets"].items():
        assert kind == "openai" or '"https://rest.fal.ai/"' in code or "REST_URL" in code, "storage points here"
        assert "'seed': 7" in (out := run_snippet(kind, code, tmp_path / kind)) or '"seed":7' in out
    assert f'base_url="{fake_server.url}/v1"' in seen["snippets"]["openai"]
    for kind, code in seen["reduxSnippets"].items():
        assert "upload" in code and "/files/picked.png" not in code
        out = run_snippet(kind, code, tmp_path / f"redux-{kind}")
        assert "'images'" in out or '"images"' in out or (kind == "openai" and '"data":[{' in out)


def test_the_playgrounds_openai_sizes_are_fals_presets():
    """The OpenAI snippet writes fal's presets as WIDTHxHEIGHT: the same table as core/sizing.py's."""
    from fluxserve.core.sizing import PRESETS

    text = (ROOT / "src" / "fluxserve" / "api" / "static" / "playground.js").read_text()
    table = text.split("const OPENAI_SIZES = {", 1)[1].split("};", 1)[0]
    sizes = dict(re.findall(r'(\w+): "(\d+x\d+)"', table))
    assert sizes == {name: f"{w}x{h}" for name, (w, h) in PRESETS.items()}
