"""The command line: parse the flags, build Settings once, run the command; the exit codes it returns are
processes/exit_codes.py's.

serve   the API and N workers as separate processes under one supervisor (the default deployment)
api     only the HTTP API (+ upkeep and webhook delivery)
worker  only a worker: loads the model, claims jobs from the store
keys, usage, generate, verify, make-tiny-model: operator and client commands
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxserve.cli.flags import Flags, add_server_flags, add_store_flags, db_path, settings_from_args
from fluxserve.core.errors import ModelLoadError
from fluxserve.core.settings import Settings, StoreSettings
from fluxserve.processes.exit_codes import ExitCode

__all__ = ["build_parser", "main", "settings_from_args"]

def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxserve", description="FLUX.1 [schnell] with fal.ai's API")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("serve", "run the API and the workers as processes under one supervisor"),
        ("api", "run only the HTTP API"),
        ("worker", "run only a worker"),
    ):
        add_server_flags(sub.add_parser(name, help=help_), env)
    from fluxserve.cli.generate import add_generate_parser

    add_generate_parser(sub)
    for name, help_ in (("keys", "create, list or revoke API keys"), ("usage", "print usage per key and day")):
        p = sub.add_parser(name, help=help_)
        add_store_flags(Flags(p, env))  # they work on the store alone; no server flag means anything here
        if name == "keys":
            p.add_argument("action", choices=["create", "list", "revoke"])
            p.add_argument("key_id", nargs="?", help="the key to revoke")
            p.add_argument("--name", default="", help="a label for the new key")
            p.add_argument("--admin", action="store_true", help="the new key may see every key's requests and usage")
        else:
            p.add_argument("--key", dest="usage_key", help="only this key id")
    from fluxserve.cli.verify import add_verify_parser

    add_verify_parser(sub, env)
    tiny = sub.add_parser("make-tiny-model", help="build tiny random FLUX.1 [schnell] models for demos and tests")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--redux", type=Path, help="also build a tiny Redux prior (FLUX.1-Redux-dev layout) here")
    return parser


def key_lines(auth: bool) -> list[str]:
    """What FAL_KEY must be, as this server checks it."""
    if auth:
        return [
            "API keys are required (auth on): make one with `fluxserve keys create --name NAME`",
            "  export FAL_KEY=<the id:secret it prints>",
        ]
    return ["Auth is off: any key is accepted",
            "  export FAL_KEY=anything   # fal_client sends nothing without one"]


def banner(server: Any, settings: Settings) -> str:
    http = server.url("http")
    lines = [
        f"fluxserve: FLUX.1 [schnell] from {settings.engine.model_path}",
        f"  run endpoint   {http}/fal-ai/flux/schnell",
        f"  queue          {http}/queue/fal-ai/flux/schnell",
        f"  API docs       {http}/docs   (OpenAPI: {http}/openapi.json)",
    ]
    if settings.api.tls_port is not None:
        lines.append(f"  over HTTPS     {server.url('https')}/fal-ai/flux/schnell")
    lines += ["", *key_lines(settings.api.auth), ""]
    if settings.api.tls_port is not None:
        https = server.url("https")
        cert, _ = server.tls_files()
        hostport = https.removeprefix("https://")
        lines += [
            "Python (fal_client): set these before importing fal_client",
            f"  export FAL_RUN_HOST={hostport}",
            f"  export FAL_QUEUE_RUN_HOST={hostport}/queue",
            f"  export SSL_CERT_FILE={Path(cert).resolve()}",
            "and, for uploads, right after `import fal_client` (before the first upload):",
            f'  fal_client.client.REST_URL = fal_client.client.CDN_URL = "{https}"',
        ]
    lines += [
        "JavaScript (@fal-ai/client), storage included:",
        "  fal.config({ credentials: process.env.FAL_KEY,",
        "    requestMiddleware: async (r) => ({ ...r, url: r.url",
        f'      .replace("https://queue.fal.run/", "{http}/queue/").replace("https://fal.run/", "{http}/")',
        f'      .replace("https://rest.fal.ai/", "{http}/") }}) }});',
        f'  in a browser: fal.config({{ proxyUrl: "{http}/proxy" }})'
        + ("" if settings.api.cors_origins else "   (needs --cors-origins <the page's origin>)"),
    ]
    return "\n".join(lines)


def run_api(settings: Settings) -> int:
    from fluxserve.processes.api_process import ApiServer, run_until_signalled

    try:
        server = ApiServer(settings)
    except OSError as exc:
        print(f"fluxserve: cannot start the API: {exc}", file=sys.stderr)
        return ExitCode.CONFIG_ERROR
    print(banner(server, settings), flush=True)
    run_until_signalled(server)
    return ExitCode.OK


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(env).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "make-tiny-model":
        from fluxserve.processes.tiny_model import make_tiny_model

        return make_tiny_model(args.dir, args.redux)
    if args.command == "generate":
        from fluxserve.cli.generate import run_generate

        return run_generate(args)
    if args.command == "verify":
        from fluxserve.cli.verify import run_verify

        return run_verify(args)
    if args.command in ("keys", "usage"):
        from fluxserve.cli.keys import run_keys, run_usage
        from fluxserve.store.open import open_store

        store = open_store(StoreSettings(db_path=db_path(args.data_dir), store_url=args.store))
        return run_keys(store, args) if args.command == "keys" else run_usage(store, args.usage_key)
    settings = settings_from_args(args)
    try:
        if args.command == "api":
            return run_api(settings)
        if args.command == "worker":
            from fluxserve.processes.worker_process import run_worker

            return run_worker(settings)
        from fluxserve.processes.supervisor import serve

        return serve(settings, argv[argv.index("serve") + 1 :], args.workers)
    except ModelLoadError as exc:
        print(f"fluxserve: cannot start: {exc}", file=sys.stderr)
        return ExitCode.CONFIG_ERROR
