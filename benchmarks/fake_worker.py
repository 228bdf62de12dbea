"""A worker whose engine takes a fixed time per denoising step and reports each stage and step as the real
engine does (so the worker writes its log lines as it would), then returns a small solid image: it measures
the queue and API, not the model. --step-ms 0 (the default) answers at once.

--feed K keeps K normal-priority jobs of 1-10 steps queued for itself (one submitted for each job it starts),
so it generates continuously; a low-priority job runs only while no normal one waits (store/scheduling.py),
so a low-priority backlog beside it is never drained."""

from __future__ import annotations

import argparse
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from backlog import bench_job
from PIL import Image

from fluxserve.blobs.open import open_blobs
from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.store.open import open_store
from fluxserve.worker.loop import Worker, WorkerConfig

# The stages FluxEngine reports around the denoising steps (engine/flux.py).
STAGES_BEFORE, STAGES_AFTER = ("text encode",), ("vae decode", "safety", "to image")


@dataclass
class Instant:
    images: list
    has_nsfw_concepts: list
    timings: dict = field(default_factory=lambda: {"inference": 0.0})


class StepEngine:
    """The whole Engine protocol (engine/protocol.py), taking step_s per denoising step."""

    def __init__(self, step_s: float = 0.0, before_batch=lambda specs: None) -> None:
        self.step_s, self.before_batch = step_s, before_batch

    def generate_batch(self, specs, progress, images=None):
        self.before_batch(specs)
        started = time.perf_counter()
        for name in STAGES_BEFORE:
            progress.stage(name)
        progress.stage("denoise")
        steps = max(spec.num_inference_steps for spec in specs)
        for step in range(steps):
            if self.step_s:
                time.sleep(self.step_s)
            progress.step(step + 1, steps)
        for name in STAGES_AFTER:
            progress.stage(name)
        took = time.perf_counter() - started  # the engine's own time, as FluxEngine reports it in timings
        return [self.generate(spec, took) for spec in specs]

    def generate(self, spec, took_s: float = 0.0):
        images = [Image.new("RGB", (spec.width, spec.height)) for _ in range(spec.num_images)]
        return Instant(images, [False] * len(images), {"inference": took_s})

    def warm_up(self, warmup):
        return None

    def gpu_memory_bytes(self):
        return None

    def describe(self):
        return {"device": "none", "levels": {}, "skipped": {}}


def main() -> None:
    own = argparse.ArgumentParser()
    own.add_argument("--step-ms", type=float, default=0.0)
    own.add_argument("--feed", type=int, default=0)
    # How often an idle worker looks at the queue besides its wake-ups: "worker" is the real worker's own.
    own.add_argument("--idle-sleep-s", default="0.002")
    args, rest = own.parse_known_args()
    settings = settings_from_args(build_parser({}).parse_args(["worker", *rest]))
    store, rng = open_store(settings.store), random.Random(15)

    def refill(specs) -> None:
        for _ in specs if args.feed else ():
            store.submit(bench_job(rng))

    for _ in range(args.feed):
        store.submit(bench_job(rng))
    idle = {} if args.idle_sleep_s == "worker" else {"idle_sleep_s": float(args.idle_sleep_s)}
    worker = Worker(store, open_blobs(settings.storage), StepEngine(args.step_ms / 1000, refill),
                    WorkerConfig.from_settings(settings, **idle))  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"worker {settings.worker_id} ready", flush=True)
    worker.run_forever()


if __name__ == "__main__":
    assert Path(__file__).parent.name == "benchmarks"
    main()
