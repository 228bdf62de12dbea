"""Two API nodes, three workers and a real redis-server; one worker and one API node are SIGKILLed and
restarted and Redis is restarted, while 300 jobs submitted through both nodes with the real fal_client run.
Every job must end completed exactly once."""

from __future__ import annotations

import collections
import sys
import time

import fal_client
import httpx
import pytest

from tests.e2e.procs import Proc, free_port
from tests.redis_server import RedisServer

APP = "fal-ai/flux/schnell"
JOBS = 300
ARGS = {"prompt": "a cat", "image_size": {"width": 96, "height": 96}, "num_inference_steps": 2}


class ScaleOut:
    def __init__(self, tmp_path, model, redis: RedisServer) -> None:
        self.tmp_path, self.model, self.redis = tmp_path, model, redis
        self.ports = [free_port(), free_port()]
        self.apis: dict[int, Proc] = {}
        self.workers: dict[str, Proc] = {}

    def flags(self, port: int) -> list[str]:
        return ["--data-dir", str(self.tmp_path / "shared"), "--model", str(self.model), "--device", "cpu",
                "--store", self.redis.url, "--port", str(port), "--tls-port", "0", "--lease-seconds", "2",
                "--warmup", "off"]  # fmt: skip

    def start_api(self, index: int) -> None:
        proc = Proc([sys.executable, "-m", "fluxserve", "api", *self.flags(self.ports[index])])
        proc.wait_for_line("run endpoint")
        self.apis[index] = proc

    def start_worker(self, name: str, wait: bool = True) -> None:
        proc = Proc([sys.executable, "-m", "fluxserve", "worker", *self.flags(0), "--worker-id", name])
        if wait:
            proc.wait_for_line(f"worker {name} ready")
        self.workers[name] = proc

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def stop(self) -> None:
        for proc in [*self.apis.values(), *self.workers.values()]:
            if proc.process.poll() is None:
                proc.kill()


@pytest.fixture
def scale_out(tmp_path, tiny_model_dir):
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    cluster = ScaleOut(tmp_path, tiny_model_dir, redis)
    yield cluster
    cluster.stop()
    redis.stop()


def completed_count(url: str, ids: list[str]) -> int:
    with httpx.Client(base_url=url, timeout=30) as http:
        return sum(http.get(f"/queue/fal-ai/flux/requests/{i}/status").json()["status"] == "COMPLETED" for i in ids)


def wait_for(predicate, timeout=240, what=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_three_hundred_jobs_survive_killed_workers_api_nodes_and_a_redis_restart(scale_out, monkeypatch):
    c = scale_out
    c.start_api(0)
    c.start_api(1)
    for name in ("w1", "w2", "w3"):
        c.start_worker(name)
    monkeypatch.setenv("FAL_KEY", "anything")
    ids = []
    for i in range(JOBS):  # alternate the node each job is submitted through
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{c.url(i % 2)}/queue/")
        ids.append(fal_client.submit(APP, arguments={**ARGS, "seed": i}).request_id)
    events = []

    def progress() -> int:
        return completed_count(c.url(0), ids[::10]) * 10

    wait_for(lambda: progress() >= 40, what="first jobs")
    c.workers["w1"].kill()
    events.append(f"SIGKILL worker w1 at ~{progress()} done")
    c.start_worker("w1-restarted", wait=False)
    wait_for(lambda: progress() >= 90, what="after the worker kill")
    c.apis[1].kill()
    events.append(f"SIGKILL API node 2 at ~{progress()} done")
    c.start_api(1)
    wait_for(lambda: progress() >= 150, what="after the API kill")
    c.redis.restart()
    events.append(f"restarted redis-server at ~{progress()} done")
    wait_for(lambda: completed_count(c.url(1), ids) == JOBS, what="all jobs")

    # Every job, read through both nodes: completed once, with its own seed and exactly one image.
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"{c.url(1)}/queue/")
    results = [fal_client.result(APP, i) for i in ids]
    with httpx.Client(base_url=c.url(0), timeout=30) as http:
        statuses = [http.get(f"/queue/fal-ai/flux/requests/{i}/status").json() for i in ids]
    from fluxserve.queue.redis import RedisJobStore

    store = RedisJobStore.open(c.redis.url)
    jobs = [store.get(i) for i in ids]
    urls = [r["images"][0]["url"] for r in results]
    by_status = collections.Counter(j.status.value for j in jobs)
    by_worker = collections.Counter(j.worker_id for j in jobs)
    started_twice = sum(1 for j in jobs if j.attempts > 1)
    print(f"\n{JOBS} jobs through 2 API nodes, 3 workers; " + "; ".join(events))
    print(f"end states {dict(by_status)}; finished by {dict(by_worker)}; started more than once: {started_twice}; "
          f"distinct outputs: {len(set(urls))}")  # fmt: skip
    assert [r["seed"] for r in results] == list(range(JOBS))
    assert all(s["status"] == "COMPLETED" and "error" not in s for s in statuses)
    assert by_status == {"completed": JOBS}
    assert len(set(urls)) == JOBS and all(len(r["images"]) == 1 for r in results)
