"""The synchronous route's overhead over its engine, two source trees side by side: each tree gets a real
`fluxserve api` and a real worker on its own SQLite (or Redis) store, whose engine reports FluxEngine's stages
and sleeps a known time per step; overhead = HTTP latency minus the engine call's own time (measured by the
engine, reported in the output's timings); at --concurrency above 1 it includes the queue wait. Rounds
alternate between the trees (the machine is shared, so each round sees the same noise); medians reported.

    .venv/bin/python benchmarks/bench_run_overhead.py --baseline-src /path/to/old/src [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BODY = {"prompt": "a red fox", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 4, "seed": 1}


def run_worker(step_s: float, argv: list[str]) -> None:
    """The worker process: fluxserve's Worker, on fake_worker's engine (it reports FluxEngine's stages and
    sleeps step_s per step, and its own time in timings)."""
    import signal

    from fake_worker import StepEngine

    from fluxserve.blobs.open import open_blobs
    from fluxserve.cli.main import build_parser, settings_from_args
    from fluxserve.store.open import open_store
    from fluxserve.worker.loop import Worker, WorkerConfig

    settings = settings_from_args(build_parser({}).parse_args(["worker", *argv]))
    worker = Worker(open_store(settings.store), open_blobs(settings.storage), StepEngine(step_s),
                    WorkerConfig.from_settings(settings))  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    print(f"worker {settings.worker_id} ready", flush=True)
    worker.run_forever()


def start_tree(src: Path, data: Path, step_s: float, store_flags: list[str]) -> tuple[str, list]:
    sys.path.insert(0, str(ROOT))
    from tests.support.procs import Proc, free_port

    os.environ["PYTHONPATH"] = f"{src}{os.pathsep}{ROOT}"
    port = free_port()
    common = ["--data-dir", str(data), "--port", str(port), "--tls-port", "0", "--warmup", "off",
              *store_flags]  # fmt: skip
    api = Proc([sys.executable, "-m", "fluxserve", "api", *common])
    api.wait_for_line("run endpoint")
    worker = Proc([sys.executable, __file__, "--worker", "--step-s", str(step_s), "--", *common])
    worker.wait_for_line("ready")
    return f"http://127.0.0.1:{port}", [api, worker]


def overhead_p50_ms(url: str, requests: int, concurrency: int = 1) -> float:
    overheads: list[float] = []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            for _ in range(requests):
                started = time.perf_counter()
                response = http.post(f"{url}/fal-ai/flux/schnell", json=BODY)
                took = time.perf_counter() - started
                overheads.append(took - response.raise_for_status().json()["timings"]["inference"])

    clients = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    return statistics.median(overheads) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-src", type=Path, help="the src folder of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--step-s", type=float, default=0.005)
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once, each --requests runs")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        run_worker(args.step_s, [a for a in rest if a != "--"])
        return
    if args.baseline_src is None:
        parser.error("--baseline-src is required")
    trees = {"baseline": args.baseline_src, "this tree": ROOT / "src"}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = {}
        for i, (name, src) in enumerate(trees.items()):
            flags = ["--store", f"{args.redis_url}/{i + 1}"] if args.redis_url else []
            urls[name], started = start_tree(src, Path(tmp) / str(i), args.step_s, flags)
            procs += started
        try:
            for url in urls.values():
                overhead_p50_ms(url, 5)  # warm: imports, connections, the first JPEG
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for name in order:
                    samples[name].append(overhead_p50_ms(urls[name], args.requests, args.concurrency))
        finally:
            for proc in procs:
                proc.terminate()
    print(f"{args.rounds} rounds x {args.concurrency} clients x {args.requests} sync runs, "
          f"{BODY['num_inference_steps']} steps of "
          f"{args.step_s * 1000:.0f} ms; overhead = p50 of (latency - the engine call's time)")  # fmt: skip
    for name, values in samples.items():
        print(f"{name:10s} overhead p50 per round: {' '.join(f'{v:.1f}' for v in values)}"
              f"  median {statistics.median(values):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
