"""Queue and API overhead under load, with an instant fake engine: submits/s and p50/p99 latency of submit and
status, for the SQLite and Redis stores with one and two API nodes. Bounded: a fixed number of requests.

    .venv/bin/python benchmarks/bench_queue.py [--submits 1000] [--concurrency 32]

Needs redis-server (scripts/install-redis.sh). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile  # noqa: E402
from tests.support.procs import Proc, free_port  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

BODY = {"prompt": "bench", "image_size": {"width": 16, "height": 16}, "num_inference_steps": 1, "sync_mode": True}


async def drive(urls: list[str], submits: int, concurrency: int) -> dict[str, float]:
    submit_lat, status_lat, ids = [], [], []
    counter = iter(range(submits))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency * 2)) as http:

        async def one_client(n: int) -> None:
            for i in counter:
                url = urls[(n + i) % len(urls)]
                t = time.perf_counter()
                r = await http.post(f"{url}/queue/fal-ai/flux/schnell", json=BODY)
                submit_lat.append(time.perf_counter() - t)
                handle = r.json()
                ids.append(handle["request_id"])
                t = time.perf_counter()
                other = urls[(n + i + 1) % len(urls)]  # read status through the other node when there are two
                await http.get(f"{other}/queue/fal-ai/flux/requests/{handle['request_id']}/status")
                status_lat.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "submits/s": submits / elapsed,
        "submit p50 ms": percentile(submit_lat, 0.5), "submit p99 ms": percentile(submit_lat, 0.99),
        "status p50 ms": percentile(status_lat, 0.5), "status p99 ms": percentile(status_lat, 0.99),
    }  # fmt: skip


def run_case(store: str, nodes: int, submits: int, concurrency: int, model: Path) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = None
    flags = ["--data-dir", str(work), "--model", str(model), "--tls-port", "0"]
    if store == "redis":
        redis = RedisServer(work / "redis")
        redis.start()
        flags += ["--store", redis.url]
    procs = []
    try:
        ports = [free_port() for _ in range(nodes)]
        for port in ports:
            procs.append(Proc([sys.executable, "-m", "fluxserve", "api", *flags, "--port", str(port)]))
            procs[-1].wait_for_line("run endpoint")
        procs.append(Proc([sys.executable, str(ROOT / "benchmarks" / "fake_worker.py"), *flags, "--worker-id", "w"]))
        procs[-1].wait_for_line("worker w ready")
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        return asyncio.run(drive(urls, submits, concurrency))
    finally:
        for proc in procs:
            proc.kill()
        if redis:
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    model = Path(tempfile.mkdtemp()) / "model"  # the API checks nothing about the model; workers are fake
    rows = []
    for store in ("sqlite", "redis"):
        for nodes in (1, 2):
            result = run_case(store, nodes, args.submits, args.concurrency, model)
            rows.append((store, nodes, result))
            print(store, nodes, {k: round(v, 1) for k, v in result.items()}, file=sys.stderr)
    cpu = subprocess.run(["sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo"], capture_output=True, text=True)
    print(f"\n{args.submits} submits + {args.submits} status reads, {args.concurrency} concurrent clients; "
          f"machine: {' '.join(cpu.stdout.split())}\n")  # fmt: skip
    keys = list(rows[0][2])
    print("| store | API nodes | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for store, nodes, result in rows:
        print(f"| {store} | {nodes} | " + " | ".join(f"{result[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
