"""The real @fal-ai/client in headless Chromium, from a page served on another origin (a second loopback
port): with --cors-origins listing it, direct calls work with a key (run, subscribe, storage.upload of a Blob,
the upload's PUT included); the same page from an origin not listed is refused; and fal's proxy protocol
(`proxyUrl` -> /proxy) works. Never skipped: `make test` installs Chromium and playwright-core."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # type: ignore[no-untyped-def]  # noqa: A002
        pass


@pytest.fixture
def page_origins():
    """Two static servers for tests/js (the page and the client's package files): two origins."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(JS)))
               for _ in range(2)]  # fmt: skip
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fal_client_in_a_browser_on_another_origin(tmp_path, page_origins):
    node, chromium = shutil.which("node"), shutil.which("chromium")
    assert node and chromium, "node or chromium is missing: run `make test` (scripts/install-browser.sh)"
    allowed, refused = page_origins
    server = start_live_server(make_settings(tmp_path, auth=True, cors_origins=(allowed,)), FakeEngine())
    base = server.url
    try:
        key = add_keys(server.store, "browser")["browser"]["authorization"].removeprefix("Key ")
        args = [node, str(JS / "browser_client.mjs"), server.url, f"{allowed}/fal_page.html",
                f"{refused}/fal_page.html", key]  # fmt: skip
        out = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=ROOT)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    for mode in ("direct", "proxy"):
        got = seen[mode]
        assert "error" not in got, f"{mode}: {got}"
        assert got["runSeed"] == 3 and got["subscribeSeed"] == 4
        assert got["runRequestId"] and got["subscribeRequestId"], "x-fal-request-id is exposed to the page"
        assert got["uploadUrl"].startswith(f"{base}/files/")
        assert got["uploadedBytes"] == got["sentBytes"] > 0
    assert seen["refused"]["origin"] == refused
    assert "runSeed" not in seen["refused"] and "Failed to fetch" in seen["refused"]["error"]
