"""`fluxserve generate`: submit through the queue, follow the status stream with a live progress line, save the
images with their seed in the file name. Ctrl-C cancels the job on the server."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import mimetypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx

from fluxserve.core.sizing import PRESETS

DEFAULT_SERVER = "http://127.0.0.1:8000"
BAR_WIDTH = 24


def add_generate_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate images through a running fluxserve, with live progress")
    p.add_argument("prompt", nargs="?", default="", help="the prompt (not needed with --redux)")
    p.add_argument("--size", default="landscape_4_3", help=f"a preset ({', '.join(PRESETS)}) or WIDTHxHEIGHT")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-images", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--format", default="jpeg", choices=["jpeg", "png"])
    p.add_argument("--acceleration", default="none", choices=["none", "regular", "high"])
    p.add_argument("--redux", help="make variations of this image (a local file or a URL)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the images")
    p.add_argument("--server", help=f"a running fluxserve (default {DEFAULT_SERVER}; if nothing answers there, "
                   "an embedded server is started for this command)")  # fmt: skip
    p.add_argument("--key", help="API key, sent as `Authorization: Key ...`")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="for the embedded server")
    p.add_argument("--model", type=Path, help="for the embedded server (default: <data-dir>/models/flux-schnell-tiny)")


def image_size(value: str) -> Any:
    if value in PRESETS:
        return value
    width, _, height = value.lower().partition("x")
    return {"width": int(width), "height": int(height)}


class Progress:
    """One status line, redrawn in place: queue position, then the denoising step and stage."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.stage, self.step, self.total = out, "", 0, 0

    def update(self, status: dict[str, Any]) -> None:
        lines = status.get("logs") or []
        if status["status"] == "IN_QUEUE" or not lines:
            self.draw(status)
        # Each line is drawn: the worker writes a step's stage lines together with it, and every stage should
        # show, not only the last one of a write.
        for line in lines:
            message = line["message"]
            if message.startswith("step "):
                self.step, self.total = (int(x) for x in message.split()[1].split("/"))
            else:
                self.stage = message
            self.draw(status)

    def draw(self, status: dict[str, Any]) -> None:
        if status["status"] == "IN_QUEUE":
            text = f"queued: {status.get('queue_position', 0)} ahead"
        else:
            done = int(BAR_WIDTH * self.step / self.total) if self.total else 0
            text = f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] step {self.step}/{self.total or '?'} {self.stage}"
        self.out.write(f"\r{text:<70}")
        self.out.flush()

    def finish(self) -> None:
        self.out.write("\n")


def error_line(response: httpx.Response) -> str:
    """A server error as one readable line naming the field."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(detail, list) and detail:
        item = detail[0]
        field = ".".join(str(x) for x in item.get("loc", [])[1:]) or "request"
        return f"{field}: {item.get('msg')}"
    return f"HTTP {response.status_code}: {detail}"


def redux_url(http: httpx.Client, source: str) -> str:
    if source.startswith(("http://", "https://", "data:")):
        return source
    path = Path(source)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    r = http.post("/files/upload", content=path.read_bytes(),
                  headers={"content-type": content_type, "x-fal-file-name": path.name})  # fmt: skip
    r.raise_for_status()
    return r.json()["access_url"]


def request_body(args: argparse.Namespace, http: httpx.Client) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"image_size": image_size(args.size), "num_images": args.num_images,
                            "num_inference_steps": args.steps, "output_format": args.format,
                            "acceleration": args.acceleration}  # fmt: skip
    if args.seed is not None:
        body["seed"] = args.seed
    if args.redux:
        return "fal-ai/flux/schnell/redux", {**body, "image_url": redux_url(http, args.redux)}
    return "fal-ai/flux/schnell", {**body, "prompt": args.prompt}


def follow(http: httpx.Client, handle: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Read the status stream until the job completes; the last status."""
    last: dict[str, Any] = {}
    with http.stream("GET", handle["status_url"] + "/stream", params={"logs": "1"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
                progress.update(last)
    return last


def save(http: httpx.Client, result: dict[str, Any], request_id: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(result["images"]):
        extension = "png" if image["content_type"] == "image/png" else "jpg"
        path = out / f"flux-{request_id[:8]}-seed{result['seed'] + k}.{extension}"
        url = image["url"]
        data = base64.b64decode(url.split(",", 1)[1]) if url.startswith("data:") else http.get(url).content
        path.write_bytes(data)
        paths.append(path)
    return paths


def reachable(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def embedded_server(args: argparse.Namespace, out: TextIO) -> Iterator[str]:
    """`fluxserve serve` on a free port for the length of one command, stopped (SIGTERM) afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "fluxserve", "serve", "--port", str(port), "--tls-port", "0", "--warmup", "off",
            "--data-dir", str(args.data_dir)] + (["--model", str(args.model)] if args.model else [])  # fmt: skip
    print(f"no server at {DEFAULT_SERVER}: starting one (fluxserve serve --port {port})", file=out)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not ready(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded server exited: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded server did not become ready in 180 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_generate(args: argparse.Namespace, out: TextIO = sys.stderr) -> int:
    if args.server or reachable(DEFAULT_SERVER):
        return generate_on(args.server or DEFAULT_SERVER, args, out)
    try:
        with embedded_server(args, out) as url:
            return generate_on(url, args, out)
    except RuntimeError as exc:
        print(f"fluxserve generate: {exc}", file=out)
        return 1


def generate_on(server: str, args: argparse.Namespace, out: TextIO) -> int:
    headers = {"authorization": f"Key {args.key}"} if args.key else {}
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=120) as http:
        try:
            app, body = request_body(args, http)
            submitted = http.post(f"/queue/{app}", json=body)
        except (httpx.HTTPError, OSError) as exc:
            print(f"fluxserve generate: cannot reach {server}: {exc}", file=out)
            return 1
        if submitted.status_code != 200:
            print(f"fluxserve generate: {error_line(submitted)}", file=out)
            return 2
        handle = submitted.json()
        progress = Progress(out)
        started = time.monotonic()
        try:
            follow(http, handle, progress)
        except KeyboardInterrupt:
            http.put(handle["cancel_url"])
            progress.finish()
            print(f"cancelled {handle['request_id']}", file=out)
            return 130
        progress.finish()
        result = http.get(handle["response_url"])
        if result.status_code != 200:
            print(f"fluxserve generate: {error_line(result)}", file=out)
            return 1
        paths = save(http, result.json(), handle["request_id"], args.out)
    print(f"{len(paths)} image(s) in {time.monotonic() - started:.1f} s:", file=out)
    for path in paths:
        print(path)
    return 0
