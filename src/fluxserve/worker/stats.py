"""A worker's own counts (jobs, images, megapixels, batch sizes, stage and latency histograms, GPU memory).

The worker reports a snapshot through the job store with its heartbeat, together with what it runs (its GPU,
device, and the switches each acceleration level runs with); the API's /metrics and /ready turn the snapshots of
the live workers into metric families labelled by worker (api/metrics.py). So worker metrics reach /metrics
through SQLite or Redis alike, with no extra port on the workers.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

from fluxserve.core.accounts import image_megapixels

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
            self.megapixels += sum(image_megapixels(w, h) for w, h in images)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "jobs": dict(self.jobs), "images": self.images, "megapixels": self.megapixels, "busy": self.busy,
                "gpu_memory_bytes": self.gpu_memory_bytes, "batch_sizes": self.batch_sizes.snapshot(),
                "queue_wait": self.queue_wait.snapshot(), "total": self.total.snapshot(),
                "stages": {stage: h.snapshot() for stage, h in self.stages.items()}, "info": dict(self.info),
            }  # fmt: skip
