"""The API against its framework: fluxserve's status, result, submit and sync run beside a bare FastAPI app
on the same uvicorn settings (the ceiling), on SQLite and Redis, at queue depths 0, 10³ and 10⁵, with and
without a worker generating, and two API nodes on Redis. Real processes over loopback HTTP; a load generator
cheap enough not to be the bottleneck (loadgen.py). Writes api.json (every figure, the machine, the commit)
and api.md (the table for docs/performance.md, a line per target of issue 15).

    .venv/bin/python benchmarks/bench_api.py [--out benchmarks/results/api] [--src OTHER_TREE] [--quick]

--src runs the fluxserve processes from another source tree (its src/ on PYTHONPATH), so a "before" tree (a
git worktree of an older commit) and this one can be measured in the same session. Needs redis-server.
See docs/performance.md, "API overhead (`make bench-api`)", for what each row means.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS.parent)]

import httpx  # noqa: E402
import loadgen  # noqa: E402
from common import cpu_seconds, git_commit, machine, use_source_tree  # noqa: E402
from loadgen import Target  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.procs import Proc  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.waits import wait_status  # noqa: E402

APP = "fal-ai/flux/schnell"
SUBMIT_BODY = {"prompt": "bench", "image_size": {"width": 16, "height": 16}, "num_inference_steps": 1}
# Submits in the benchmark are low priority, like the backlog: the generating worker never runs them.
LOW = {"x-fal-queue-priority": "low"}
# The load generator against the ceiling: its own CPU per request beside the bare server's.
GENERATOR_FIGURES = ("client_cpu_ms_per_request", "server_cpu_ms_per_request", "per_s")


@dataclass(frozen=True)
class Plan:
    duration_s: float = 2.5  # of each measured load
    depths: tuple[int, ...] = (0, 1_000, 100_000)
    runs: int = 40  # sequential sync runs per store
    pollers: int = 40  # fal_client's pattern: each polls every poll_interval_s
    poll_interval_s: float = 0.1
    clients: int = 16  # closed-loop clients for the saturation rows
    # Paced submits (each client: submit, wait for the answer, sleep submit_interval_s, again): the submit's
    # latency under load, where a saturation row's p99 is only its queue (clients ÷ throughput).
    submitters: int = 16
    submit_interval_s: float = 0.1
    # The private redis-server's appendfsync: "always" (every write fsynced before its reply, in Redis' one
    # thread: reads wait behind each fsync) or "everysec" (docs/deploy.md's).
    redis_fsync: str = "always"
    feed_step_ms: float = 10.0  # the generating worker: 1-10-step jobs at this step time
    run_step_ms: float = 5.0  # the sync run's engine: run_steps steps at this step time, nothing else
    run_steps: int = 4


QUICK = Plan(duration_s=0.25, depths=(0, 100), runs=5)


class Stack:
    """One store (a SQLite file or a private redis-server) with fluxserve API nodes and fake workers on it."""

    def __init__(self, store: str, work: Path, redis_fsync: str = "always") -> None:
        self.store, self.work = store, work
        self.redis = RedisServer(work / "redis", redis_fsync) if store == "redis" else None
        self.flags = ["--data-dir", str(work), "--model", str(work / "model"), "--tls-port", "0",
                      "--max-queue-length", "10000000"]  # fmt: skip
        if self.redis:
            self.redis.start()
            self.flags += ["--store", self.redis.url]
        self.apis: list[Proc] = []
        self.urls: list[str] = []
        self.worker: Proc | None = None
        self.backlog = subprocess.Popen([sys.executable, str(BENCHMARKS / "backlog.py"), *self.flags],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def start_api(self) -> str:
        port = free_port()
        proc = Proc([sys.executable, "-m", "fluxserve", "api", *self.flags, "--port", str(port)])
        self.apis.append(proc)
        proc.wait_for_line("run endpoint")
        self.urls.append(f"http://127.0.0.1:{port}")
        return self.urls[-1]

    def start_worker(self, step_ms: float, feed: int, wait: bool = True) -> None:
        self.stop_worker()
        # The real worker's idle wait: it claims when the store's change signal wakes it, as deployed.
        argv = [sys.executable, str(BENCHMARKS / "fake_worker.py"), *self.flags, "--worker-id", "bench",
                "--step-ms", str(step_ms), "--feed", str(feed), "--idle-sleep-s", "worker"]  # fmt: skip
        self.worker = Proc(argv)
        if wait:
            self.worker_ready()

    def worker_ready(self) -> None:
        assert self.worker is not None
        self.worker.wait_for_line("worker bench ready")

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker = None

    def settle(self, depth: int, cancel: list[str]) -> str:
        """Cancel the benchmark's own submits, fill the backlog up to `depth`; the last job queued, or ""."""
        assert self.backlog.stdin and self.backlog.stdout
        self.backlog.stdin.write(" ".join([str(depth), *cancel]) + "\n")
        self.backlog.stdin.flush()
        cancel.clear()
        answer = self.backlog.stdout.readline().strip()
        assert answer, f"backlog.py exited {self.backlog.poll()}"
        return "" if answer == "-" else answer

    def stop(self) -> None:
        self.stop_worker()
        self.backlog.kill()
        for proc in self.apis:
            proc.kill()
        if self.redis:
            self.redis.stop()
        shutil.rmtree(self.work, ignore_errors=True)  # a 10⁵-job backlog is tens of MB


class Bench:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rows: list[dict] = []
        self.ceiling_per_s: float | None = None
        self.submitted: list[str] = []  # the benchmark's own submits, cancelled before the next rows
        self.phases: dict[str, float] = {}  # seconds spent starting, filling and measuring

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - started

    def measure(self, scenario: dict, load: str, targets: list[Target], pids: list[int],
                **extra: object) -> dict:  # fmt: skip
        """One load against `targets`; the API processes `pids` are charged the CPU they used meanwhile."""
        p = self.plan
        cpu = [cpu_seconds(pid) for pid in pids]
        with self.timed("measure"):
            on_body = extra.pop("on_body", None)
            if load == "poll":
                sample = loadgen.poll(targets, p.pollers, p.poll_interval_s, p.duration_s)
            elif load == "paced":
                sample = loadgen.poll(targets, p.submitters, p.submit_interval_s, p.duration_s,
                                      on_body)  # type: ignore[arg-type]  # fmt: skip
            else:
                sample = loadgen.saturate(targets, p.clients, p.duration_s, on_body)  # type: ignore[arg-type]
        used = sum(cpu_seconds(pid) for pid in pids) - sum(cpu)
        row = {**scenario, "load": load, **sample.figures(), **extra}
        row["server_cpu_ms_per_request"] = 1000 * used / row["requests"] if row["requests"] else 0
        if load == "saturate" and self.ceiling_per_s:
            row["ratio_to_ceiling"] = row["per_s"] / self.ceiling_per_s
        text = sample.last_body.decode(errors="replace")
        row["last_body"] = text if scenario["op"] == "status" else text[:400]
        self.rows.append(row)
        print(f"{label(row)}: p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms, {row['per_s']:.0f}/s",
              file=sys.stderr)  # fmt: skip
        return row

    def ceiling(self) -> None:
        port = free_port()
        proc = Proc([sys.executable, str(BENCHMARKS / "ceiling_app.py"), "--port", str(port)])
        try:
            proc.wait_for_line("ceiling serving")
            target = [Target.of(f"http://127.0.0.1:{port}/queue/fal-ai/flux/requests/x/status?logs=1")]
            scenario = {"store": "none", "depth": 0, "worker": False, "op": "ceiling", "nodes": 1}
            self.measure(scenario, "poll", target, [proc.process.pid])
            row = self.measure(scenario, "saturate", target, [proc.process.pid])
            self.ceiling_per_s = row["per_s"]
            row["ratio_to_ceiling"] = 1.0
        finally:
            proc.kill()

    def store(self, name: str) -> None:
        p = self.plan
        stack = Stack(name, Path(tempfile.mkdtemp(prefix=f"bench-api-{name}-")), p.redis_fsync)
        try:
            with self.timed("start processes"):
                stack.start_worker(p.run_step_ms, feed=0, wait=False)  # beside the API: startups add up
                url = stack.start_api()
                stack.worker_ready()
            api = [stack.apis[0].process.pid]
            finished = self.sync_runs(stack, url, api)
            tail = finished
            for depth in p.depths:
                for generating in (False, True):
                    with self.timed("fill backlog"):
                        tail = stack.settle(depth, self.submitted) or (tail if depth else finished)
                    if generating:
                        with self.timed("start processes"):
                            stack.start_worker(p.feed_step_ms, feed=2)
                    self.cell(stack, url, api, depth, generating, tail, finished)
                    if name == "redis" and generating and depth == p.depths[-1]:
                        self.two_nodes(stack, depth, tail)
                    with self.timed("stop processes"):
                        stack.stop_worker()
        finally:
            stack.stop()

    def sync_runs(self, stack: Stack, url: str, api: list[int]) -> str:
        """The sync run's latency with an idle worker whose engine takes exactly run_steps × run_step_ms, and
        one queued job run to the end, whose result the result rows read. Returns that job's id."""
        p = self.plan
        body = {**SUBMIT_BODY, "num_inference_steps": p.run_steps}
        target = Target.of(f"{url}/{APP}", method="POST", body=body)
        loadgen.sequential(target, 3)  # warm-up: first-call imports and connections
        cpu = cpu_seconds(api[0])
        sample = loadgen.sequential(target, p.runs)
        engine_ms = p.run_steps * p.run_step_ms
        row = {"store": stack.store, "depth": 0, "worker": False, "op": "run", "nodes": 1,
               "load": "sequential", **sample.figures(), "engine_ms": engine_ms,
               "server_cpu_ms_per_request": 1000 * (cpu_seconds(api[0]) - cpu) / p.runs}  # fmt: skip
        row["overhead_p50_ms"] = row["p50_ms"] - engine_ms
        self.rows.append(row)
        print(f"{label(row)}: p50 {row['p50_ms']:.1f} ms", file=sys.stderr)
        with httpx.Client(timeout=30) as http:
            handle = http.post(f"{url}/queue/{APP}", json=SUBMIT_BODY).json()
            wait_status(http, handle, logs="1")
        stack.stop_worker()
        return handle["request_id"]

    def cell(self, stack: Stack, url: str, api: list[int], depth: int, generating: bool, tail: str,
             finished: str) -> None:  # fmt: skip
        scenario = {"store": stack.store, "depth": depth, "worker": generating, "nodes": 1}
        status = [Target.of(f"{url}/queue/{APP.rsplit('/', 1)[0]}/requests/{tail}/status?logs=1")]
        result = [Target.of(f"{url}/queue/{APP.rsplit('/', 1)[0]}/requests/{finished}")]
        submit = [Target.of(f"{url}/queue/{APP}", method="POST", body=SUBMIT_BODY, headers=LOW)]
        row = self.measure({**scenario, "op": "status"}, "poll", status, api)
        row["queue_position"] = json.loads(row["last_body"] or "{}").get("queue_position")
        # Exact: depth - 1 jobs ahead of the tail while nothing moves (with a worker, its feed is ahead too).
        row["position_exact"] = row["queue_position"] == depth - 1 if depth and not generating else None
        self.measure({**scenario, "op": "status"}, "saturate", status, api)
        self.measure({**scenario, "op": "result"}, "saturate", result, api)
        # Cancelled before the next rows (Stack.settle), so those see the depth they are named for.
        for load in ("paced", "saturate"):
            self.measure({**scenario, "op": "submit"}, load, submit, api,
                         on_body=lambda body: self.submitted.append(json.loads(body)["request_id"]))  # fmt: skip

    def two_nodes(self, stack: Stack, depth: int, tail: str) -> None:
        with self.timed("start processes"):
            second = stack.start_api()
        pids = [proc.process.pid for proc in stack.apis]
        path = f"/queue/fal-ai/flux/requests/{tail}/status?logs=1"
        targets = [Target.of(f"{url}{path}") for url in (stack.urls[0], second)]
        scenario = {"store": stack.store, "depth": depth, "worker": True, "op": "status", "nodes": 2}
        self.measure(scenario, "saturate", targets, pids)
        stack.apis.pop().kill()
        stack.urls.pop()


def label(row: dict) -> str:
    if row["op"] == "ceiling":
        return f"ceiling (bare FastAPI) · {load_name(row['load'])}"
    nodes = " · 2 API nodes" if row["nodes"] == 2 else ""
    worker = "worker generating" if row["worker"] else "no worker generating"
    if row["op"] == "run":
        engine = f"{row['engine_ms']:.0f} ms engine"
        return f"{row['store']} · sync run ({engine}) · overhead {row['overhead_p50_ms']:.1f} ms"
    return f"{row['store']} · depth {row['depth']:,} · {worker}{nodes} · {row['op']} {load_name(row['load'])}"


LOAD_NAMES = {"poll": "40 pollers × 100 ms", "paced": "16 clients × 1 per 100 ms",
              "saturate": "saturation, 16 clients", "sequential": "sequential"}  # fmt: skip


def load_name(load: str) -> str:
    return LOAD_NAMES[load]


def targets(rows: list[dict], top_depth: int) -> list[tuple[str, bool | None, str]]:
    """Each target of issue 15: (target, met, the figures it was judged on); met is None if not measured."""
    generating = [r for r in rows if r["worker"] and r["op"] == "status"]
    polls = [r for r in generating if r["load"] == "poll"]
    saturated = [r for r in generating if r["load"] == "saturate" and r["nodes"] == 1]
    runs = [r for r in rows if r["op"] == "run"]
    # Latency under load: the status pollers and the paced submits (a saturation row's p99 is its queue,
    # clients ÷ throughput, and is reported beside).
    top = [r for r in rows if r["depth"] == top_depth and r["nodes"] == 1 and
           (r["op"], r["load"]) in (("submit", "paced"), ("status", "poll"))]  # fmt: skip
    top_saturated = [r["p99_ms"] for r in rows if r["depth"] == top_depth and r["nodes"] == 1
                     and r["op"] == "submit" and r["load"] == "saturate"]  # fmt: skip
    exact = [r["position_exact"] for r in rows if r.get("position_exact") is not None]
    worst_poll = max((r["p99_ms"] for r in polls), default=None)
    worst_ratio = min((r["ratio_to_ceiling"] for r in saturated), default=None)
    worst_run = max((r["overhead_p50_ms"] for r in runs), default=None)
    worst_top = max((r["p99_ms"] for r in top), default=None)

    def judged(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return [
        ("status p99 ≤ 20 ms, 40 pollers at 100 ms, SQLite and Redis, worker generating",
         judged(worst_poll, (worst_poll or 0) <= 20), f"worst p99 {worst_poll or 0:.1f} ms"),
        ("status reads ≥ 50 % of the bare-framework ceiling, worker generating",
         judged(worst_ratio, (worst_ratio or 0) >= 0.5), f"worst ratio {worst_ratio or 0:.2f}"),
        ("sync run overhead ≤ 3 ms p50 over the bare engine",
         judged(worst_run, (worst_run or 0) <= 3), f"worst {worst_run or 0:.1f} ms"),
        (f"submit and status p99 ≤ 20 ms at {top_depth:,} queued jobs, exact positions",
         judged(worst_top, (worst_top or 0) <= 20 and all(exact)),
         f"worst p99 {worst_top or 0:.1f} ms (paced submits and status pollers; submit at saturation: "
         f"{max(top_saturated, default=0):.1f} ms); positions exact in {sum(exact)}/{len(exact)} checks"),
    ]  # fmt: skip


def scaling_rule(rows: list[dict]) -> str:
    saturated = [r for r in rows if r["op"] == "status" and r["load"] == "saturate" and r["worker"]]
    if not saturated:
        return ""
    worst = max(r["server_cpu_ms_per_request"] for r in saturated)
    return (f"Scaling rule: one API core serves about {1000 / worst:.0f} status reads/s (the worst measured "
            f"CPU per status read, {worst:.2f} ms, worker generating); size API nodes by reads/s ÷ that.")


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [f"`make bench-api` {meta['plan_name']}, {meta['started']}; {meta['machine']['cpus']} × "
             f"{meta['machine']['cpu_model']}, Python {meta['machine']['python']}; fluxserve from "
             f"`{meta['source']}` at {meta['commit']}; Redis appendfsync {meta['plan']['redis_fsync']}; "
             f"{meta['seconds']:.0f} s.", "",
             "| scenario | p50 ms | p95 ms | p99 ms | per s | ratio to ceiling | API CPU ms/req |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in report["rows"]:
        ratio = f"{row['ratio_to_ceiling']:.2f}" if "ratio_to_ceiling" in row else ""
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        figures = " | ".join(f"{row[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        lines.append(f"| {label(row)}{errors} | {figures} | {row['per_s']:.0f} | {ratio} | "
                     f"{row['server_cpu_ms_per_request']:.2f} |")  # fmt: skip
    gen = report["generator"]
    lines += ["", f"Load generator: {gen['client_cpu_ms_per_request']:.3f} ms of its own CPU per request "
              f"against the ceiling's {gen['server_cpu_ms_per_request']:.3f} ms (while it is below, the "
              f"server is what the ceiling row measures).",
              "", scaling_rule(report["rows"]), ""]  # fmt: skip
    for target, met, figures in report["targets"]:
        verdict = "not measured" if met is None else ("met" if met else "not met")
        lines.append(f"- {target}: **{verdict}** ({figures})")
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "api.md").write_text(markdown(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results" / "api")
    parser.add_argument("--src", type=Path, default=None, help="run fluxserve from this source tree")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    parser.add_argument("--redis-fsync", choices=("always", "everysec"), default=Plan.redis_fsync,
                        help="the redis-server's appendfsync")  # fmt: skip
    args = parser.parse_args()
    plan = replace(QUICK if args.quick else Plan(), redis_fsync=args.redis_fsync)
    tree = use_source_tree(args.src)
    started = time.time()
    bench = Bench(plan)
    bench.ceiling()
    for store in ("sqlite", "redis"):
        bench.store(store)
    ceiling = next(r for r in bench.rows if r["op"] == "ceiling" and r["load"] == "saturate")
    report = {
        "meta": {"plan_name": "--quick" if args.quick else "full", "plan": asdict(plan), "source": str(tree),
                 "commit": git_commit(tree), "machine": machine(), "seconds": time.time() - started,
                 "phases_s": bench.phases,
                 "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))},
        "generator": {k: ceiling[k] for k in GENERATOR_FIGURES},
        "rows": bench.rows,
        "targets": targets(bench.rows, plan.depths[-1]),
    }  # fmt: skip
    write(args.out, report)
    print(markdown(report))


if __name__ == "__main__":
    main()
