"""The real `openai` JS SDK under Node, its baseURL pointed at fluxserve's /v1: generations (base64 and URL),
a variation, the typed errors naming the field, and the model list (tests/js/openai_client.mjs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "js" / "openai_client.mjs"


def node_openai(base_url: str, scenario: str, key: str | None = None) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make node-deps` (installs Node and tests/js/node_modules)")
    if not (ROOT / "tests" / "js" / "node_modules" / "openai").is_dir():
        pytest.fail("tests/js/node_modules lacks openai: run `make node-deps`")
    env = {**os.environ, "OPENAI_API_KEY": key} if key else None
    proc = subprocess.run([node, str(SCRIPT), base_url, scenario], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env=env)  # fmt: skip
    assert proc.returncode == 0, f"scenario {scenario} exited {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("openai-js"), redux_enabled=True, auth=True)
    live = start_live_server(settings, FakeEngine())
    credential = add_keys(live.store, "js")["js"]["authorization"].split(" ", 1)[1]
    yield live, credential
    live.stop()


def test_generate_as_base64_and_as_a_url(server):
    live, key = server
    got = node_openai(live.url, "generate", key)
    assert got == {"size": "208x128", "count": 2, "b64_bytes": "ffd8ff", "url_status": 200,
                   "url_type": "image/png", "output_format": "jpeg"}  # fmt: skip


def test_a_variation_of_an_uploaded_png(server):
    live, key = server
    assert node_openai(live.url, "variation", key) == {"count": 1, "png": "PNG"}


def test_refusals_are_the_sdks_typed_errors(server):
    live, key = server
    got = node_openai(live.url, "errors", key)
    assert got["n"]["name"] == "BadRequestError" and got["n"]["param"] == "n"
    assert got["model"] == {
        "name": "NotFoundError",
        "status": 404,
        "param": "model",
        "code": "model_not_found",
    }
    assert got["edit"]["name"] == "BadRequestError" and got["edit"]["code"] == "unsupported_operation"
    assert got["failed"]["name"] == "InternalServerError"


def test_the_model_list_and_a_missing_key(server):
    live, key = server
    assert node_openai(live.url, "models", key) == {"ids": ["fal-ai/flux/schnell"]}
    proc = subprocess.run([shutil.which("node") or "node", str(SCRIPT), live.url, "models"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "OPENAI_API_KEY": "sk-wrong"})  # fmt: skip
    assert proc.returncode == 1 and "AuthenticationError" in proc.stderr
