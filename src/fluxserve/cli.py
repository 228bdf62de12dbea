"""The command line: the edge where flags and FLUXSERVE_* variables become typed Settings, once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from fluxserve.config import (
    DEFAULT_MAX_PIXELS,
    TINY_MODEL_SUBDIR,
    ApiSettings,
    EngineSettings,
    QueueSettings,
    Settings,
    StorageSettings,
)
from fluxserve.errors import ModelLoadError

log = logging.getLogger("fluxserve")


def _serve_parser(sub: argparse._SubParsersAction, env: Mapping[str, str]) -> None:
    def default(name: str, fallback: str) -> str:
        return env.get(f"FLUXSERVE_{name}", fallback)

    p = sub.add_parser("serve", help="run the API and a worker in one process")
    p.add_argument("--host", default=default("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(default("PORT", "8000")))
    p.add_argument("--tls-port", type=int, default=int(default("TLS_PORT", "8443")),
                   help="HTTPS port for fal_client (0 turns HTTPS off)")  # fmt: skip
    p.add_argument("--tls-cert", type=Path, default=env.get("FLUXSERVE_TLS_CERT"))
    p.add_argument("--tls-key", type=Path, default=env.get("FLUXSERVE_TLS_KEY"))
    p.add_argument("--data-dir", type=Path, default=Path(default("DATA_DIR", "data")))
    p.add_argument("--model", type=Path, default=env.get("FLUXSERVE_MODEL"),
                   help="diffusers folder in the FLUX.1-schnell layout (default: <data-dir>/models/flux-schnell-tiny)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default("DEVICE", "auto"))
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default=default("DTYPE", "auto"))
    p.add_argument("--safety-checker", default=env.get("FLUXSERVE_SAFETY_CHECKER"),
                   help="folder of a StableDiffusionSafetyChecker (default: next to the model); 'none' disables it")  # fmt: skip
    p.add_argument("--public-url", default=env.get("FLUXSERVE_PUBLIC_URL"),
                   help="absolute base URL for image URLs (default: the URL each request came in on)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, default=int(default("MAX_PIXELS", str(DEFAULT_MAX_PIXELS))),
                   help="largest width*height per image; larger requests get a 422")  # fmt: skip


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxserve", description="FLUX.1 [schnell] with fal.ai's API")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub, env)
    tiny = sub.add_parser("make-tiny-model", help="build tiny random FLUX.1 [schnell] models for demos and tests")
    tiny.add_argument("dir", type=Path)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    data_dir: Path = args.data_dir
    safety = args.safety_checker
    return Settings(
        data_dir=data_dir,
        api=ApiSettings(
            host=args.host, port=args.port, tls_port=args.tls_port or None, tls_cert=args.tls_cert,
            tls_key=args.tls_key, public_url=args.public_url, max_pixels=args.max_pixels,
        ),  # fmt: skip
        queue=QueueSettings(db_path=data_dir / "jobs.sqlite3"),
        storage=StorageSettings(root=data_dir / "files"),
        engine=EngineSettings(
            model_path=args.model or data_dir / TINY_MODEL_SUBDIR,
            device=args.device,
            dtype=args.dtype,
            safety_checker_path=Path(safety) if safety and safety != "none" else None,
            safety_disabled=safety == "none",
        ),
    )


def banner(service: object, settings: Settings) -> str:
    http = service.url("http")  # type: ignore[attr-defined]
    lines = [
        f"fluxserve: FLUX.1 [schnell] from {settings.engine.model_path}",
        f"  run endpoint   {http}/fal-ai/flux/schnell",
        f"  API docs       {http}/docs   (OpenAPI: {http}/openapi.json)",
    ]
    if settings.api.tls_port is not None:
        https = service.url("https")  # type: ignore[attr-defined]
        cert, _ = service.tls_files()  # type: ignore[attr-defined]
        hostport = https.removeprefix("https://")
        lines += [
            f"  over HTTPS     {https}/fal-ai/flux/schnell",
            "",
            "Point unchanged fal code here (set these before importing fal_client):",
            "  export FAL_KEY=anything   # any key is accepted; fal_client sends nothing without one",
            f"  export FAL_RUN_HOST={hostport}",
            f"  export FAL_QUEUE_RUN_HOST={hostport}/queue",
            f"  export SSL_CERT_FILE={Path(cert).resolve()}",
        ]
    return "\n".join(lines)


def serve(settings: Settings) -> int:
    from fluxserve.engine.pipeline import FluxEngine
    from fluxserve.server import Service, serve_until_signalled

    try:
        engine = FluxEngine.load(settings.engine)
    except ModelLoadError as exc:
        print(f"fluxserve: cannot start: {exc}", file=sys.stderr)
        return 2
    service = Service(settings, engine)
    print(banner(service, settings), flush=True)
    asyncio.run(serve_until_signalled(service))
    return 0


def make_tiny_model(target: Path) -> int:
    from fluxserve.engine.loading import quiet_libraries
    from fluxserve.engine.tiny import build_tiny_flux

    quiet_libraries()
    build_tiny_flux(target)
    print(f"tiny FLUX.1 [schnell] model written to {target}")
    return 0


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser(env).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "make-tiny-model":
        return make_tiny_model(args.dir)
    return serve(settings_from_args(args))
