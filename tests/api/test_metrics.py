"""/metrics: scraped and parsed; worker numbers arrive through the job store."""

from __future__ import annotations

import dataclasses
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings, start_live_server, wait_ready
from tests.support.fakes import FakeEngine


def scrape(http) -> dict[str, dict]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples, name, **labels):
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_after_some_work(fake_server, fake_engine):
    with fake_server.client() as http:
        http.post("/fal-ai/flux/schnell", json={"prompt": "a", "image_size": "square_hd", "num_images": 2})
        http.post("/fal-ai/flux/schnell", json={"prompt": "explode"})
        http.post("/fal-ai/flux/schnell", json={"prompt": ""})
        fake_engine.gate.clear()
        http.post("/queue/fal-ai/flux/schnell", json={"prompt": "held"})
        http.post("/queue/fal-ai/flux/schnell", json={"prompt": "waiting"})
        time.sleep(0.3)
        samples = scrape(http)
        fake_engine.gate.set()
    worker = "test-worker"
    assert value(samples, "fluxserve_http_requests_total", route="/fal-ai/flux/schnell", status="200") == 1
    assert value(samples, "fluxserve_http_requests_total", route="/fal-ai/flux/schnell", status="422") == 1
    assert value(samples, "fluxserve_http_requests_total", route="/fal-ai/flux/schnell", status="500") == 1
    assert value(samples, "fluxserve_queue_depth") == 1
    assert value(samples, "fluxserve_queue_oldest_age_seconds") > 0.2
    assert value(samples, "fluxserve_workers", state="ready") == 1
    assert value(samples, "fluxserve_jobs_total", worker=worker, status="completed") == 1
    assert value(samples, "fluxserve_jobs_total", worker=worker, status="failed") == 1
    assert value(samples, "fluxserve_images_total", worker=worker) == 2
    assert value(samples, "fluxserve_megapixels_total", worker=worker) == 4, "1024x1024 = 1.05 MP, rounded up: 2 each"
    assert value(samples, "fluxserve_worker_busy", worker=worker) == 1
    assert value(samples, "fluxserve_batch_size_count", worker=worker) >= 1
    assert value(samples, "fluxserve_job_seconds_count", worker=worker) == 2
    assert value(samples, "fluxserve_queue_wait_seconds_count", worker=worker) == 2


def test_metrics_say_each_workers_gpu_device_and_switches_per_level(tmp_path):
    description = {"device": "cuda:0 NVIDIA H200", "levels": {"none": [], "regular": ["fused_qkv", "compile"],
                                                              "high": ["fused_qkv", "fp8", "compile"]}}  # fmt: skip
    settings = dataclasses.replace(make_settings(tmp_path), gpu="3")
    server = start_live_server(settings, FakeEngine(description=description))
    try:
        with server.client() as http:
            wait_ready(http)
            samples = scrape(http)
    finally:
        server.stop()
    info = samples["fluxserve_worker_info"]
    assert [(s.labels, s.value) for s in info] == [({"worker": "test-worker", "gpu": "3",
                                                     "device": "cuda:0 NVIDIA H200"}, 1.0)]  # fmt: skip
    switches = {(s.labels["level"], s.labels["switch"]) for s in samples["fluxserve_acceleration"]
                if s.labels["worker"] == "test-worker" and s.value == 1}  # fmt: skip
    assert switches == {("regular", "fused_qkv"), ("regular", "compile"),
                        ("high", "fused_qkv"), ("high", "fp8"), ("high", "compile")}  # fmt: skip


def test_stage_histograms_follow_the_engines_stage_names(tmp_path):
    timings = {"text_encode": 0.01, "denoise": 0.3, "vae_decode": 0.04, "to_image": 0.02, "safety": 0.03}
    server = start_live_server(make_settings(tmp_path), FakeEngine(timings={"inference": 0.4, **timings}))
    try:
        with server.client() as http:
            assert http.post("/fal-ai/flux/schnell", json={"prompt": "a"}).status_code == 200
            time.sleep(0.1)
            samples = scrape(http)
    finally:
        server.stop()
    for stage in timings:
        assert value(samples, "fluxserve_stage_seconds_count", worker="test-worker", stage=stage) == 1, stage
    assert value(samples, "fluxserve_stage_seconds_count", worker="test-worker", stage="image_encode") == 0


def test_no_middleware_is_a_base_http_middleware(fake_server):
    # BaseHTTPMiddleware runs every request in a task of its own behind a memory stream: on a status read it
    # cost more CPU than the read itself. Pure ASGI middleware adds a function call.
    from starlette.middleware.base import BaseHTTPMiddleware

    stack = [m.cls for m in fake_server.api.app.user_middleware]
    assert stack and not [c for c in stack if isinstance(c, type) and issubclass(c, BaseHTTPMiddleware)]
