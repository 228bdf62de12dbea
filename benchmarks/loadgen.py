"""A load generator cheap enough that on two cores the server, not the client, is what is measured: raw
asyncio streams on uvloop, one keep-alive HTTP/1.1 connection per client, requests prebuilt as bytes, and only
the status line and Content-Length parsed. (httpx costs several times the server's own time per request.)

Two shapes: `poll` is fal_client's (each client sends, waits for the answer, sleeps `interval_s`, again);
`saturate` is closed-loop (each client sends its next request the moment the last is answered)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop
from common import percentile


def request_bytes(url: str, method: str = "GET", body: dict | None = None,
                  headers: dict | None = None) -> bytes:  # fmt: skip
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", *extra]
    payload = json.dumps(body).encode() if body is not None else b""
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    raw: bytes

    @classmethod
    def of(cls, url: str, **request: object) -> Target:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, request_bytes(url, **request))  # type: ignore[arg-type]


class Connection:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)
        assert self.reader is not None
        self.writer.write(self.target.raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        start = lower.index(b"content-length:") + 15
        body = await self.reader.readexactly(int(lower[start:lower.index(b"\r\n", start)]))
        if b"connection: close" in lower:
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    last_body: bytes = b""
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0

    def record(self, started: float, status: int, body: bytes) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.last_body = body

    def figures(self) -> dict[str, float | int]:
        count, lat = len(self.latencies), self.latencies
        return {"p50_ms": percentile(lat, 0.5), "p95_ms": percentile(lat, 0.95),
                "p99_ms": percentile(lat, 0.99),
                "per_s": count / self.elapsed_s if self.elapsed_s else 0, "requests": count,
                "errors": sum(n for status, n in self.statuses.items() if status >= 400),  # 202: still queued
                "client_cpu_ms_per_request": 1000 * self.client_cpu_s / count if count else 0,
                "body_bytes": len(self.last_body),
                "statuses": {str(k): v for k, v in self.statuses.items()}}  # fmt: skip


async def _drive(targets: list[Target], clients: int, duration_s: float, interval_s: float,
                 on_body: Callable[[bytes], None] | None) -> Sample:  # fmt: skip
    sample = Sample()
    conns = [Connection(targets[n % len(targets)]) for n in range(clients)]
    # Connected before the clock starts: the figures are of requests, not handshakes.
    for _, body in await asyncio.gather(*(conn.request() for conn in conns)):
        if on_body is not None:
            on_body(body)
    deadline = time.perf_counter() + duration_s
    rng = random.Random(0)

    async def client(conn: Connection) -> None:
        if interval_s:
            await asyncio.sleep(rng.random() * interval_s)  # pollers that started at different moments
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, body = await conn.request()
            sample.record(started, status, body)
            if on_body is not None:
                on_body(body)
            if interval_s:
                await asyncio.sleep(interval_s)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(conn) for conn in conns))
    sample.elapsed_s, sample.client_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    for conn in conns:
        conn.close()
    return sample


def poll(targets: list[Target], clients: int, interval_s: float, duration_s: float,
         on_body: Callable[[bytes], None] | None = None) -> Sample:  # fmt: skip
    return run(_drive(targets, clients, duration_s, interval_s, on_body))


def saturate(targets: list[Target], clients: int, duration_s: float,
             on_body: Callable[[bytes], None] | None = None) -> Sample:  # fmt: skip
    return run(_drive(targets, clients, duration_s, 0.0, on_body))


def sequential(target: Target, count: int) -> Sample:
    """`count` requests one after the other on one connection (the sync run's latency, nothing queued)."""

    async def go() -> Sample:
        sample, conn = Sample(), Connection(target)
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(count):
            begun = time.perf_counter()
            sample.record(begun, *await conn.request())
        sample.elapsed_s, sample.client_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        conn.close()
        return sample

    return run(go())


def run(coro):
    return uvloop.run(coro)
