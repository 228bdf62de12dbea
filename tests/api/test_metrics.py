"""/metrics: scraped and parsed; worker numbers arrive through the job store."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families


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
