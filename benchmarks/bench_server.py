"""Server benchmark: images/s and p50/p99 latency of the synchronous endpoint over HTTP at concurrency 1, 4 and
16, on a real `fluxserve api` + `fluxserve worker`, and the server's own overhead over the bare pipeline
(median HTTP latency at concurrency 1 minus the median of the same generation called in-process).

    .venv/bin/python benchmarks/bench_server.py --model data/models/flux-schnell-tiny [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support.procs import Proc, free_port  # noqa: E402

BODY = {"prompt": "a red fox", "image_size": {"width": 256, "height": 256}, "num_inference_steps": 4,
        "output_format": "jpeg", "seed": 1}  # fmt: skip


async def drive(url: str, requests: int, concurrency: int, level: str) -> dict[str, float]:
    latencies: list[float] = []
    todo = iter(range(requests))
    async with httpx.AsyncClient(timeout=120) as http:

        async def client() -> None:
            for _ in todo:
                started = time.perf_counter()
                r = await http.post(f"{url}/fal-ai/flux/schnell", json={**BODY, "acceleration": level})
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"images/s": requests / elapsed, "p50 ms": ordered[len(ordered) // 2] * 1000,
            "p99 ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000}  # fmt: skip


def bare_pipeline_ms(model: Path, repeats: int) -> float:
    """The same generation in-process: engine + JPEG encode, no HTTP, no queue."""
    from fluxserve.api.endpoints import text_to_spec
    from fluxserve.api.schemas import SchnellInput
    from fluxserve.core.settings import EngineSettings
    from fluxserve.engine.flux import FluxEngine
    from fluxserve.worker.outputs import encode

    engine = FluxEngine.load(EngineSettings(model_path=model, device="cpu"))
    spec = text_to_spec(SchnellInput(**BODY), "http://h", 2048 * 2048)
    times = []
    for _ in range(repeats + 2):
        started = time.perf_counter()
        for image in engine.generate(spec).images:
            encode(image, "jpeg")
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="data/models/flux-schnell-tiny")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--level", default="none")
    args = parser.parse_args()
    model = Path(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    port = free_port()
    flags = ["--data-dir", str(work), "--model", str(model), "--device", "cpu", "--port", str(port),
             "--tls-port", "0", "--warmup", "off"]  # fmt: skip
    api = Proc([sys.executable, "-m", "fluxserve", "api", *flags])
    worker = Proc([sys.executable, "-m", "fluxserve", "worker", *flags, "--worker-id", "bench"])
    try:
        api.wait_for_line("run endpoint")
        worker.wait_for_line("worker bench ready")
        url = f"http://127.0.0.1:{port}"
        asyncio.run(drive(url, 4, 1, args.level))  # warm-up
        rows = [(c, asyncio.run(drive(url, args.requests, c, args.level))) for c in (1, 4, 16)]
    finally:
        api.kill()
        worker.kill()
    bare = bare_pipeline_ms(model, repeats=10)
    print(f"\n{args.requests} requests per row, {BODY['image_size']}, {BODY['num_inference_steps']} steps, "
          f"acceleration={args.level}; bare pipeline + JPEG in-process: {bare:.1f} ms\n")  # fmt: skip
    print("| concurrency | images/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for concurrency, r in rows:
        print(f"| {concurrency} | {r['images/s']:.1f} | {r['p50 ms']:.1f} | {r['p99 ms']:.1f} |")
    print(f"\nserver overhead at concurrency 1, p50: {rows[0][1]['p50 ms'] - bare:.1f} ms per request")


if __name__ == "__main__":
    main()
