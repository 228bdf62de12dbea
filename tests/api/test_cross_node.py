"""Two API nodes on one Redis store: any node answers for any job, and a cancel sent to node 2 stops the job
running on node 1's worker between steps."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

from tests.conftest import make_settings, start_live_server
from tests.support.fakes import FakeEngine


def redis_settings(tmp_path, redis_server, name):
    settings = make_settings(tmp_path / name)
    url = redis_server.url
    return dataclasses.replace(settings, store=dataclasses.replace(settings.store, store_url=url))


def test_any_node_answers_and_cancels_for_any_other(tmp_path, redis_server):
    from fluxserve.store.redis import RedisJobStore

    RedisJobStore.open(redis_server.url).redis.flushdb()
    slow = FakeEngine(step_s=0.05)
    node1 = start_live_server(redis_settings(tmp_path, redis_server, "n1"), slow)
    node2 = start_live_server(redis_settings(tmp_path, redis_server, "n2"), slow)
    try:
        with node1.client() as one, node2.client() as two:
            handle = one.post("/queue/fal-ai/flux/schnell", json={"prompt": f"x {uuid.uuid4()}",
                                                                   "num_inference_steps": 12}).json()  # fmt: skip
            rid = handle["request_id"]
            deadline = time.monotonic() + 10
            while two.get(f"/queue/fal-ai/flux/requests/{rid}/status").json()["status"] != "IN_PROGRESS":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.1)
            assert two.put(f"/queue/fal-ai/flux/requests/{rid}/cancel").status_code == 202
            time.sleep(0.4)
            end = one.get(f"/queue/fal-ai/flux/requests/{rid}/status", params={"logs": 1}).json()
            steps = [m["message"] for m in end["logs"] if m["message"].startswith("step")]
            assert end["error_type"] == "client_cancelled" and 0 < len(steps) < 12
            with two.stream("GET", f"/queue/fal-ai/flux/requests/{rid}/status/stream") as r:
                events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
            assert events[-1]["status"] == "COMPLETED"
            done = one.post("/queue/fal-ai/flux/schnell", json={"prompt": "y", "image_size": "square"}).json()
            deadline = time.monotonic() + 10
            while (result := two.get(f"/queue/fal-ai/flux/requests/{done['request_id']}")).status_code == 400:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert result.status_code == 200
    finally:
        node1.stop()
        node2.stop()
