"""A worker whose engine returns a small solid image at once: measures the queue and API, not the model."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from fluxserve.blobs.open import open_blobs
from fluxserve.cli.main import build_parser, settings_from_args
from fluxserve.store.open import open_store
from fluxserve.worker.loop import Worker, WorkerConfig


@dataclass
class Instant:
    images: list
    has_nsfw_concepts: list
    timings: dict = field(default_factory=lambda: {"inference": 0.0})


class InstantEngine:
    """The whole Engine protocol (engine/protocol.py), answering at once."""

    def generate_batch(self, specs, progress=None, images=None):
        return [self.generate(spec) for spec in specs]

    def generate(self, spec):
        images = [Image.new("RGB", (spec.width, spec.height)) for _ in range(spec.num_images)]
        return Instant(images, [False] * len(images))

    def warm_up(self, warmup):
        return None

    def gpu_memory_bytes(self):
        return None

    def describe(self):
        return {"device": "none", "levels": {}, "skipped": {}}


def main() -> None:
    _, rest = argparse.ArgumentParser().parse_known_args()
    settings = settings_from_args(build_parser({}).parse_args(["worker", *rest]))
    worker = Worker(open_store(settings.queue), open_blobs(settings.storage), InstantEngine(),
                    WorkerConfig.from_settings(settings, idle_sleep_s=0.002))  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"worker {settings.worker_id} ready", flush=True)
    worker.run_forever()


if __name__ == "__main__":
    assert Path(__file__).parent.name == "benchmarks"
    main()
