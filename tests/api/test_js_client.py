"""The real JavaScript client (@fal-ai/client 1.10.1, under Node) against fluxserve (fake engine).

Each test runs tests/js/queue_client.mjs for one scenario; the script points fal's hosts at the live server
with `requestMiddleware` (fal-protocol.md §1.3, JavaScript) and prints one JSON line with what it observed.
`make node-deps` installs Node (when missing) and the pinned client into tests/js/node_modules.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from fluxserve.core.jobs import Priority
from tests.conftest import add_keys, make_settings, start_live_server
from tests.support.fakes import FakeEngine
from tests.support.waits import wait_status

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
SCRIPT = JS_DIR / "queue_client.mjs"
APP = "fal-ai/flux/schnell"


def node_client(base_url: str, scenario: str, timeout: float = 60, key: str | None = None) -> dict[str, Any]:
    """Run one scenario under Node (with FAL_KEY=key, for a server with auth on); its single JSON line, or a
    test failure with everything it printed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make node-deps` (installs Node and tests/js/node_modules)")
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        pytest.fail(f"{JS_DIR / 'node_modules'} lacks @fal-ai/client: run `make node-deps`")
    proc = subprocess.run(
        [node, str(SCRIPT), base_url, scenario],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "FAL_KEY": key} if key else None,
    )  # fmt: skip
    assert proc.returncode == 0, f"scenario {scenario} exited {proc.returncode}\n{proc.stderr}\n{proc.stdout}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[0])


def assert_output(data: dict[str, Any], seed: int = 5) -> None:
    """The FLUX output of §8: images, seed, has_nsfw_concepts, prompt, timings."""
    assert set(data) >= {"images", "seed", "has_nsfw_concepts", "prompt", "timings"}, data
    assert data["seed"] == seed and data["prompt"] == "a lighthouse at dusk"
    assert len(data["images"]) == 1 and data["has_nsfw_concepts"] == [False]
    image = data["images"][0]
    assert image["url"] and image["width"] == 512 and image["height"] == 512
    assert isinstance(data["timings"], dict)


def hold_queue(server: Any, engine: Any, release_after_s: float) -> None:
    """Occupy the worker with a held job, so the client's job waits IN_QUEUE until the gate opens."""
    engine.step_s = 0.1
    engine.gate.clear()
    with server.client() as http:
        blocker = http.post(f"/queue/{APP}", json={"prompt": "blocker", "image_size": "square"})
    assert blocker.status_code == 200, blocker.text
    timer = threading.Timer(release_after_s, engine.gate.set)
    timer.daemon = True
    timer.start()


def test_run(fake_server):
    out = node_client(fake_server.url, "run")
    assert_output(out["data"])
    assert out["requestId"]
    assert out["requests"] == [["POST", f"{fake_server.url}/{APP}"]]


def test_subscribe_polling_sees_queue_progress_and_logs(fake_server, fake_engine):
    hold_queue(fake_server, fake_engine, release_after_s=1.0)
    out = node_client(fake_server.url, "subscribe")
    assert out["enqueued"] and out["enqueued"] == out["requestId"]
    statuses = out["statuses"]
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
    assert statuses.index("IN_PROGRESS") > statuses.index("IN_QUEUE")
    assert "step 4/4" in out["logs"]
    assert_output(out["data"])
    paths = {url.removeprefix(fake_server.url).split("?")[0] for _, url in out["requests"]}
    base = f"/queue/fal-ai/flux/requests/{out['requestId']}"
    assert paths == {f"/queue/{APP}", f"{base}/status", base}


def test_subscribe_streaming_uses_the_sse_status_stream(fake_server, fake_engine):
    hold_queue(fake_server, fake_engine, release_after_s=1.0)
    out = node_client(fake_server.url, "subscribe-stream")
    assert out["enqueued"] == out["requestId"] and out["requestId"]
    statuses = out["statuses"]
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
    assert "step 4/4" in out["logs"]
    assert_output(out["data"])
    base = f"{fake_server.url}/queue/fal-ai/flux/requests/{out['requestId']}"
    assert [method for method, _ in out["requests"]] == ["POST", "GET", "GET"]
    assert out["requests"][1][1] == f"{base}/status/stream?logs=1"
    assert out["requests"][2][1] == base


def test_queue_submit_status_result(fake_server, fake_engine):
    fake_engine.step_s = 0.05
    out = node_client(fake_server.url, "queue")
    submitted = out["submitted"]
    assert submitted["status"] == "IN_QUEUE" and submitted["request_id"]
    assert {"response_url", "status_url", "cancel_url"} <= set(submitted)
    assert out["statuses"][-1] == "COMPLETED" and "COMPLETED" not in out["statuses"][:-1]
    assert out["final"].get("error") is None and out["final"].get("error_type") is None
    assert "step 4/4" in out["logs"]
    assert_output(out["data"])
    assert out["requestId"] == submitted["request_id"]


def test_cancel(fake_server, fake_engine):
    fake_engine.step_s = 0.1  # 12 steps: 1.2 s, so the job is queued or running when the cancel arrives
    out = node_client(fake_server.url, "cancel")
    assert out["before_cancel"] in ("IN_QUEUE", "IN_PROGRESS")
    assert out["cancel_returned"] is None  # 2xx: the JS client resolves to undefined
    final = out["final"]
    assert final["status"] == "COMPLETED" and final["error_type"] == "client_cancelled"
    assert out["statuses"][-1] == "COMPLETED"
    result = out["result"]
    assert result["class"] == "ApiError" and result["status"] == 499, result
    assert result["body"]["error_type"] == "client_cancelled"
    second = out["second_cancel"]
    assert second["class"] == "ApiError" and second["status"] == 400, second
    assert second["body"] == {"status": "ALREADY_COMPLETED"}
    assert len(fake_engine.calls) <= 1 and all(call.num_inference_steps == 12 for call in fake_engine.calls)


def test_validation_error(fake_server, fake_engine):
    out = node_client(fake_server.url, "validation")
    error = out["error"]
    assert error["class"] == "ValidationError" and error["status"] == 422, error
    assert error["body"]["detail"][0]["loc"] == ["body", "num_images"]
    assert fake_engine.calls == []


def test_storage_upload_stores_into_fluxserve(fake_server):
    out = node_client(fake_server.url, "upload")
    assert out["url"].startswith(f"{fake_server.url}/files/") and out["url"].endswith(".png")
    with fake_server.client() as http:
        stored = http.get(out["url"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/png"
    assert base64.b64encode(stored.content).decode() == out["sent"]
    assert [method for method, _ in out["requests"]] == ["POST"], "initiate goes through the middleware"


@pytest.fixture
def secured_redux(tmp_path):
    """Auth on, Redux on: a key of its own for the client, and one for a stranger."""
    server = start_live_server(make_settings(tmp_path, auth=True, redux_enabled=True), FakeEngine())
    yield server, add_keys(server.store, "alice", "mallory")
    server.stop()


def test_uploads_work_with_auth_on_and_stay_the_uploaders(secured_redux):
    """fal.storage.upload and a Blob in an input, with a key: the PUT carries no Authorization (fal's upload
    URLs are pre-signed), and the upload URL alone is its credential."""
    server, keys = secured_redux
    alice = keys["alice"]["authorization"].removeprefix("Key ")
    uploaded = node_client(server.url, "upload", key=alice)
    with server.client() as http:
        assert http.get(uploaded["url"]).content == base64.b64decode(uploaded["sent"])
    redux = node_client(server.url, "blob-input", key=alice)
    assert len(redux["data"]["images"]) == 1 and redux["data"]["seed"] == 3
    initiated = [url for _, url in redux["requests"] if "/storage/upload/initiate" in url]
    assert len(initiated) == 1, redux["requests"]
    uploads = server.api.app.state.uploads
    assert uploads.active(alice.split(":")[0]) == 2, "both owned by the key that sent them"
    mallory = keys["mallory"]["authorization"].split()[1].split(":")[0]
    assert uploads.active(mallory) == 0


def test_queue_priority_low_waits_behind_a_later_normal_request(fake_server, fake_engine):
    """JS sends x-fal-queue-priority on every submit (normal unless `priority` says low): behind a busy
    worker, a low request submitted first waits behind a normal one submitted after it; positions say so."""
    fake_engine.gate.clear()
    try:
        with fake_server.client() as http:
            blocker = http.post(f"/queue/{APP}", json={"prompt": "blocker", "image_size": "square"}).json()
            wait_status(http, blocker, "IN_PROGRESS", timeout=10)
        out = node_client(fake_server.url, "priority")
    finally:
        fake_engine.gate.set()
    low, normal = out["low"], out["normal"]
    assert low["submitted"] == 0 and normal["submitted"] == 0, "each was first in line when it was submitted"
    assert normal["status"] == {"status": "IN_QUEUE", "queue_position": 0, "logs": None}
    assert low["status"] == {"status": "IN_QUEUE", "queue_position": 1, "logs": None}
    with fake_server.client() as http:
        for request_id in (low["requestId"], normal["requestId"]):
            wait_status(http, {"status_url": f"/queue/fal-ai/flux/requests/{request_id}/status"}, timeout=10)
    assert [call.prompt for call in fake_engine.calls] == ["blocker", "normal priority", "low priority"]


def test_an_unknown_queue_priority_is_ignored_as_fal_ignores_it(fake_server, fake_engine):
    """JS passes any `priority` string through; fal ignores one it does not know: it runs as normal."""
    out = node_client(fake_server.url, "priority-unknown")
    job = fake_server.store.get(out["requestId"])
    assert job is not None and job.priority is Priority.NORMAL
