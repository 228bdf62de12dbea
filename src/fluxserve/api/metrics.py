"""Every Prometheus metric the API exposes: the live workers' reported snapshots (see worker/stats.py) turned
into families labelled by worker, the store's queue figures, and the HTTP middleware's own counters.
"""

from __future__ import annotations

import time
from typing import Any

from fluxserve.core.worker_state import WorkerState


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
        for state in WorkerState:
            states.add_metric([state.value], sum(1 for r in reports.values() if r["state"] == state.value))
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
    from prometheus_client import Counter
    from prometheus_client import Histogram as PromHistogram

    requests = Counter("fluxserve_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
                       registry=registry)  # fmt: skip
    latency = PromHistogram("fluxserve_http_request_seconds", "HTTP request duration", ["method", "route"],
                            registry=registry)  # fmt: skip
    return requests, latency


class HttpMetrics:
    """Counts every HTTP request by method, route template and status, and times it. Pure ASGI, not
    BaseHTTPMiddleware: that one runs each request in a task of its own behind a memory stream, which cost a
    status read more CPU than the read. The labelled children are kept per label tuple, so a request does one
    dictionary look-up instead of prometheus_client's label validation and locking."""

    def __init__(self, app: Any, requests: Any, latency: Any) -> None:
        self.app, self.requests, self.latency = app, requests, latency
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def seen(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            self.count(scope, status, time.perf_counter() - started)

    def count(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        # The router writes the matched route into this same scope dict; its template keeps ids out of labels.
        route = getattr(scope.get("route"), "path", "unmatched")
        method, labels = scope["method"], (scope["method"], route, str(status))
        counter = self._counters.get(labels)
        if counter is None:
            counter = self._counters[labels] = self.requests.labels(*labels)
        counter.inc()
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[(method, route)] = self.latency.labels(method, route)
        timer.observe(seconds)
