"""docs/browsers.md's Node backend, run as written: it holds the key and forwards fal's proxy protocol to
fluxserve's /proxy, so the real @fal-ai/client with `proxyUrl` and no credentials gets results from a
fluxserve with auth on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.ports import free_port
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "browsers.md"
CLIENT = """
import { fal } from "@fal-ai/client";
fal.config({ proxyUrl: { url: process.env.PROXY_URL, when: "always" } });
const app = "fal-ai/flux/schnell";
const ran = await fal.subscribe(app, { input: { prompt: "a cat", seed: 5 }, pollInterval: 50 });
const streamed = await fal.subscribe(app, { input: { prompt: "a dog", seed: 6 }, mode: "streaming" });
console.log(JSON.stringify({ ran: ran.data.seed, streamed: streamed.data.seed, id: ran.requestId }));
"""


def documented_proxy() -> str:
    return re.search(r"<!-- server-proxy\.mjs -->\n```js\n(.*?)```", DOC.read_text(), re.DOTALL).group(1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 404
    except httpx.TransportError:
        return False


@pytest.fixture
def secured(tmp_path):
    server = start_live_server(make_settings(tmp_path / "server", auth=True), FakeEngine())
    yield server, add_keys(server.store, "app")["app"]["authorization"].removeprefix("Key ")
    server.stop()


def test_the_documented_node_backend_keeps_the_key_and_proxies(secured, tmp_path):
    server, key = secured
    node = shutil.which("node")
    assert node, "node is missing: run `make test`"
    (tmp_path / "server-proxy.mjs").write_text(documented_proxy())
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "FLUXSERVE_URL": server.url, "FAL_KEY": key, "PORT": str(port)}
    backend = subprocess.Popen([node, "server-proxy.mjs"], cwd=tmp_path, env=env)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/elsewhere"), 20, "the documented backend")
        proxy_url = f"http://127.0.0.1:{port}/api/fal/proxy"
        out = subprocess.run([node, "--input-type=module", "-e", CLIENT], capture_output=True, text=True,
                             timeout=60, cwd=ROOT / "tests" / "js",
                             env={"PATH": "/usr/bin:/bin", "PROXY_URL": proxy_url})  # fmt: skip
    finally:
        backend.terminate()
        backend.wait(timeout=10)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"ran":5' in out.stdout and '"streamed":6' in out.stdout and '"id":""' not in out.stdout
