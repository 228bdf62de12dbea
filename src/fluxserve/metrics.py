"""Every Prometheus metric fluxserve exposes, in one place.

Workers keep their own counts (jobs, images, megapixels, batch sizes, stage and latency histograms, GPU memory)
in a WorkerStats and report a snapshot through the job store with their heartbeat, together with what they run
(their GPU, device, and the switches each acceleration level runs with); the API's /metrics and /ready turn the
snapshots of the live workers into metric families labelled by worker. So worker metrics reach /metrics through
SQLite or Redis alike, with no extra port on the workers.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Any

# Histogram buckets (seconds) for job latency and stages; batch sizes get their own.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16)
STAGES = ("text_encode", "image_encode", "denoise", "vae_decode", "to_image", "safety")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.sum = buckets, [0] * (len(buckets) + 1), 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum}


class WorkerStats:
    """A worker's cumulative numbers since it started (Prometheus handles the reset when it restarts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, int] = {}
        self.images = 0
        self.megapixels = 0
        self.busy = 0
        self.gpu_memory_bytes: float | None = None
        # What the worker runs: {"gpu", "device", "levels", "skipped", ...}, set by the worker (see worker_info).
        self.info: dict[str, Any] = {}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.queue_wait = Histogram(LATENCY_BUCKETS)
        self.total = Histogram(LATENCY_BUCKETS)
        self.stages = {stage: Histogram(LATENCY_BUCKETS) for stage in STAGES}

    def job_ended(self, status: str, queue_wait_s: float | None, total_s: float | None) -> None:
        with self._lock:
            self.jobs[status] = self.jobs.get(status, 0) + 1
            if queue_wait_s is not None:
                self.queue_wait.observe(queue_wait_s)
            if total_s is not None:
                self.total.observe(total_s)

    def batch_ran(self, size: int, timings: dict[str, float], images: list[tuple[int, int]]) -> None:
        with self._lock:
            self.batch_sizes.observe(size)
            for stage, seconds in timings.items():
                if stage in self.stages:
                    self.stages[stage].observe(seconds)
            self.images += len(images)
            # The seed's unit: megapixels per image, rounded up.
            self.megapixels += sum(math.ceil(w * h / 1_000_000) for w, h in images)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "jobs": dict(self.jobs), "images": self.images, "megapixels": self.megapixels, "busy": self.busy,
                "gpu_memory_bytes": self.gpu_memory_bytes, "batch_sizes": self.batch_sizes.snapshot(),
                "queue_wait": self.queue_wait.snapshot(), "total": self.total.snapshot(),
                "stages": {stage: h.snapshot() for stage, h in self.stages.items()}, "info": dict(self.info),
            }  # fmt: skip


def worker_info(report: dict[str, Any]) -> dict[str, Any]:
    """What a worker's report says it runs (whatever its engine adds passes through); a worker that does not
    say (an older one) gets empty fields."""
    info = (report.get("stats") or {}).get("info") or {}
    return {"gpu": None, "device": None, "levels": {}, "skipped": {}, **info}


def histogram_family(name: str, doc: str, labels: list[str]) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    return HistogramMetricFamily(name, doc, labels=labels)


def add_histogram(family: Any, labels: list[str], snap: dict[str, Any]) -> None:
    cumulative, buckets = 0, []
    for bound, count in zip([*snap["buckets"], float("inf")], snap["counts"]):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
    family.add_metric(labels, buckets, snap["sum"])


class StoreCollector:
    """Metrics read from the job store at scrape time: the queue, and every live worker's reported stats."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        queue = self.store.queue_stats()
        yield GaugeMetricFamily("fluxserve_queue_depth", "Requests waiting in the queue", value=queue["depth"])
        yield GaugeMetricFamily("fluxserve_queue_oldest_age_seconds", "Age of the oldest waiting request",
                                value=queue["oldest_age_s"])  # fmt: skip
        reports = self.store.worker_reports()
        states = GaugeMetricFamily("fluxserve_workers", "Live workers by state", labels=["state"])
        for state in ("warming", "ready", "stopping"):
            states.add_metric([state], sum(1 for r in reports.values() if r["state"] == state))
        yield states
        yield from self.worker_families(reports)

    def worker_families(self, reports: dict[str, Any]) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        jobs = CounterMetricFamily("fluxserve_jobs", "Jobs ended, by worker and end state", labels=["worker", "status"])
        images = CounterMetricFamily("fluxserve_images", "Images generated", labels=["worker"])
        megapixels = CounterMetricFamily("fluxserve_megapixels", "Megapixels generated (per image, rounded up)",
                                         labels=["worker"])  # fmt: skip
        busy = GaugeMetricFamily("fluxserve_worker_busy", "1 while the worker runs a batch", labels=["worker"])
        memory = GaugeMetricFamily("fluxserve_gpu_memory_bytes", "Peak GPU memory allocated", labels=["worker"])
        batch = histogram_family("fluxserve_batch_size", "Jobs per pipeline call", ["worker"])
        wait = histogram_family("fluxserve_queue_wait_seconds", "Submit to start of work", ["worker"])
        total = histogram_family("fluxserve_job_seconds", "Submit to end", ["worker"])
        stage = histogram_family("fluxserve_stage_seconds", "Time per stage of a batch", ["worker", "stage"])
        about = GaugeMetricFamily("fluxserve_worker_info", "1 per live worker, labelled with its GPU and device",
                                  labels=["worker", "gpu", "device"])  # fmt: skip
        switches = GaugeMetricFamily("fluxserve_acceleration", "1 per switch an acceleration level runs with",
                                     labels=["worker", "level", "switch"])  # fmt: skip
        for worker, report in reports.items():
            info = worker_info(report)
            about.add_metric([worker, info["gpu"] or "", info["device"] or ""], 1)
            for level, names in info["levels"].items():
                for name in names:
                    switches.add_metric([worker, level, name], 1)
            stats = report.get("stats") or {}
            if not stats:
                continue
            for status, count in stats["jobs"].items():
                jobs.add_metric([worker, status], count)
            images.add_metric([worker], stats["images"])
            megapixels.add_metric([worker], stats["megapixels"])
            busy.add_metric([worker], stats["busy"])
            if stats.get("gpu_memory_bytes") is not None:
                memory.add_metric([worker], stats["gpu_memory_bytes"])
            add_histogram(batch, [worker], stats["batch_sizes"])
            add_histogram(wait, [worker], stats["queue_wait"])
            add_histogram(total, [worker], stats["total"])
            for name, snap in stats["stages"].items():
                add_histogram(stage, [worker, name], snap)
        yield from (jobs, images, megapixels, busy, memory, batch, wait, total, stage, about, switches)


def http_metrics(registry: Any) -> tuple[Any, Any]:
    from prometheus_client import Counter, Histogram as PromHistogram

    requests = Counter("fluxserve_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
                       registry=registry)  # fmt: skip
    latency = PromHistogram("fluxserve_http_request_seconds", "HTTP request duration", ["method", "route"],
                            registry=registry)  # fmt: skip
    return requests, latency
