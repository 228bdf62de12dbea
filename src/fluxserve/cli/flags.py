"""The server's flags: each takes its default from a FLUXSERVE_<NAME> variable, else from the settings
dataclass field it fills (core/settings.py), so a default is written once; and settings_from_args, which turns
the parsed flags into Settings."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxserve.core.settings import (
    ATTENTION_BACKENDS,
    PROVENANCE_MARKS,
    TINY_MODEL_SUBDIR,
    AccelSettings,
    AdmissionSettings,
    ApiSettings,
    EngineSettings,
    LeaseSettings,
    ProvenanceSettings,
    RetryPolicy,
    S3Settings,
    Settings,
    StorageSettings,
    StoreSettings,
    UpkeepSettings,
    UrlPolicy,
    WarmupSettings,
    WebhookSettings,
    WorkerSettings,
    parse_s3_url,
)
from fluxserve.processes.gpus import Gpu, gpu_list, worker_count

DEFAULT_DATA_DIR = Path("data")


class Flags:
    """Adds flags whose defaults come from FLUXSERVE_<NAME> variables (read here, at the edge, only)."""

    def __init__(self, parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
        self.parser, self.env = parser, env

    def add(self, flag: str, type_: Any = str, default: Any = None, **kwargs: Any) -> None:
        variable = "FLUXSERVE_" + flag.lstrip("-").replace("-", "_").upper()
        raw = self.env.get(variable)
        value = type_(raw) if raw is not None else default
        self.parser.add_argument(flag, type=type_, default=value, help=kwargs.pop("help", None), **kwargs)


def parse_origins(text: str) -> tuple[str, ...]:
    """--cors-origins: comma-separated origins (scheme://host[:port]) or `*`; spaces, a trailing / ignored."""
    return tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())


def positive_int(text: str) -> int:
    """A count that must be at least one (0 would silently mean "never")."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def hours_or_never(text: str) -> float:
    """Hours an object lives; 0 or "never": it is kept until deleted."""
    try:
        value = 0.0 if text.strip().lower() == "never" else float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more hours, or never, not {text}")
    return value


def add_server_flags(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    f = Flags(parser, env)
    add_api_flags(f)
    add_model_flags(f)
    add_scale_out_flags(f)
    add_speed_flags(f)
    add_queue_flags(f)
    add_upload_flags(f)
    add_connection_flags(f)
    add_input_limit_flags(f)
    add_webhook_flags(f)
    add_provenance_flags(f)
    add_url_flags(parser, f, env)


def add_store_flags(f: Flags) -> None:
    """Where the data lives: all that `keys` and `usage` need, and part of every server command."""
    f.add("--data-dir", Path, DEFAULT_DATA_DIR)
    f.add("--store", help="redis://HOST:PORT/DB: a job store shared by many API nodes and workers "
          "(default: SQLite in <data-dir>)")  # fmt: skip


def add_api_flags(f: Flags) -> None:
    f.add("--host", default=ApiSettings.host)
    f.add("--port", int, ApiSettings.port)
    f.add("--tls-port", int, ApiSettings.tls_port, help="HTTPS port for fal_client (0 turns HTTPS off)")
    f.add("--tls-cert", Path)
    f.add("--tls-key", Path)
    add_store_flags(f)
    f.add("--public-url", help="absolute base URL for image and queue URLs "
          "(default: the URL each request came in on)")  # fmt: skip
    f.add("--max-pixels", int, ApiSettings.max_pixels, help="largest width*height per image; larger requests get a 422")
    f.add("--auth", default="auto", choices=["auto", "on", "off"],
          help="require API keys (auto: off on a loopback bind, on for any other)")  # fmt: skip
    f.add("--stream-previews", default="on" if ApiSettings.stream_previews else "off", choices=["on", "off"],
          help="step events of /stream carry a small JPEG preview of the current latents")  # fmt: skip
    f.add("--cors-origins", default=",".join(ApiSettings.cors_origins),
          help="comma-separated browser origins allowed to call the API (https://app.example, or *); "
          "default: none, no CORS headers")  # fmt: skip


def add_model_flags(f: Flags) -> None:
    f.add("--model", Path, help="diffusers folder in the FLUX.1-schnell layout "
          "(default: <data-dir>/models/flux-schnell-tiny)")  # fmt: skip
    f.add("--model-base", Path, help="with --model FILE.safetensors: the diffusers folder for the other components")
    f.add("--device", default=EngineSettings.device, choices=["auto", "cpu", "cuda"])
    f.add("--dtype", default=EngineSettings.dtype, choices=["auto", "bfloat16", "float16", "float32"])
    f.add("--redux-model", Path, help="FluxPriorReduxPipeline folder (the FLUX.1-Redux-dev layout) for Redux")
    f.add("--safety-checker", help="folder of a StableDiffusionSafetyChecker (default: next to the model); "
          "'none' disables it")  # fmt: skip


def add_scale_out_flags(f: Flags) -> None:
    f.add("--workers", worker_count, "auto",
          help="worker processes `serve` starts, each on its own GPU: auto = one per visible GPU "
          "(CUDA_VISIBLE_DEVICES, else nvidia-smi) or one without a GPU; N = the first N GPUs "
          "(more workers than GPUs only on the CPU)")  # fmt: skip
    f.add("--gpus", gpu_list, help="`serve`: one worker on each of these GPUs, e.g. 0,2,3 (nvidia-smi "
          "indices or UUIDs), for a node shared with other work (default: every visible GPU)")  # fmt: skip
    f.add("--gpu", help="the GPU this worker runs on: it sees only that one (serve sets it for each worker)")
    f.add("--worker-id", help="this worker's name in leases and logs (default: host-gpuN with --gpu, "
          "else host-pid)")  # fmt: skip
    f.add("--blobs", help="s3://BUCKET/PREFIX: images and uploads in an S3-compatible bucket shared by all nodes "
          "(default: <data-dir>/files)")  # fmt: skip
    f.add("--s3-endpoint", help="S3 endpoint URL for MinIO, R2 or another non-AWS service")
    f.add("--s3-region")
    f.add("--s3-public-url", help="public base URL of the bucket (or its CDN); without it image URLs are presigned")
    f.add("--s3-presign-seconds", int, S3Settings.presign_seconds)


def add_speed_flags(f: Flags) -> None:
    f.add("--batch-size", int, WorkerSettings.max_batch,
          help="compatible jobs a worker runs in one pipeline call (acceleration != none)")  # fmt: skip
    f.add("--batch-window-ms", float, WorkerSettings.batch_window_s * 1000,
          help="how long a worker waits to fill a batch")  # fmt: skip
    f.add("--text-cache", int, EngineSettings.text_cache_size, help="text embeddings kept for repeated prompts")
    accel = AccelSettings()
    f.add("--compile", default=accel.compile, choices=["auto", "on", "off"],
          help="regional torch.compile for regular/high (auto: on CUDA)")  # fmt: skip
    f.add("--compile-mode", default=accel.compile_mode,
          help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")  # fmt: skip
    f.add("--fp8", default=accel.fp8, choices=["auto", "on", "off"], help="fp8 transformer for high (auto: CUDA 8.9+)")
    f.add("--fp8-granularity", default=accel.fp8_granularity, choices=["row", "tensor"],
          help="fp8 activation scales per token row (batch-invariant) or per tensor")  # fmt: skip
    f.add("--attention", default=accel.attention, choices=["auto", "default", *ATTENTION_BACKENDS],
          help="SDPA backend for regular/high (auto: the faster of cudnn and flash, measured at load on CUDA)")
    f.add("--cuda-graphs", default=accel.cuda_graphs, choices=["auto", "off"],
          help="replay the transformer as one CUDA graph per shape at regular/high, where bit-identical")
    f.add("--disable-accel", help="comma-separated optimisations to switch off "
          "(fused_qkv,channels_last_vae,attention,fp8,compile,cuda_graphs)")  # fmt: skip
    f.add("--warmup", default="presets", choices=["presets", "off"],
          help="run the six size presets once at start, so no request pays a first-call compile")  # fmt: skip
    f.add("--warmup-levels", default="auto",
          help="comma-separated acceleration levels to warm up (auto: those that compile here: regular,high on CUDA)")
    f.add("--warmup-batches", default="1", help="comma-separated batch sizes to warm up")
    f.add("--memory", default=EngineSettings.memory, choices=["normal", "low"],
          help="low: fp8 transformer and model offload, so 1024x1024 fits a 24 GB GPU (CUDA only)")  # fmt: skip


def add_queue_flags(f: Flags) -> None:
    f.add("--max-running-per-key", int, WorkerSettings.max_running_per_key,
          help="jobs one API key may have running at once (0: unlimited)")  # fmt: skip
    f.add("--lease-seconds", float, LeaseSettings.lease_s,
          help="a job whose worker stops renewing its lease this long is requeued")  # fmt: skip
    f.add("--max-attempts", int, LeaseSettings.max_attempts,
          help="times a job is started before a dying worker makes it fail")  # fmt: skip
    f.add("--max-queue-length", int, AdmissionSettings.max_queue_length,
          help="queued requests beyond this get a 429")  # fmt: skip
    f.add("--max-queued-per-key", int, AdmissionSettings.max_queued_per_key,
          help="one API key's share of the queue: its queued requests beyond this get a 429 (0: no share)")
    f.add("--retention-hours", float, UpkeepSettings.retention_s / 3600,
          help="how long finished job records (status, result JSON) are kept; their images stay")  # fmt: skip
    f.add("--output-retention-hours", hours_or_never, ApiSettings.output_retention_s / 3600,
          help="how long output images are kept unless the request's X-Fal-Object-Lifecycle-Preference "
          "says; 0 or never: until deleted (fal's default)")  # fmt: skip
    f.add("--webhook-attempts", int, RetryPolicy.max_attempts, help="tries per webhook (fal: 10 over about 2 hours)")
    f.add("--webhook-first-delay", float, RetryPolicy.first_delay_s,
          help="seconds before the first retry; doubles each time")  # fmt: skip


def add_upload_flags(f: Flags) -> None:
    storage = StorageSettings  # its fields' defaults, read off the class (an instance needs a root)
    f.add("--upload-url-minutes", float, storage.upload_url_ttl_s / 60,
          help="how long an upload URL from /storage/upload/initiate stays good for its one PUT")  # fmt: skip
    f.add("--upload-quota", int, storage.upload_quota,
          help="uploads one API key may hold at once, stored or URLs pending (0: no quota)")  # fmt: skip
    f.add("--upload-retention-hours", float, storage.upload_retention_s / 3600,
          help="how long uploaded files are kept")  # fmt: skip


def add_connection_flags(f: Flags) -> None:
    api = ApiSettings()
    f.add("--header-timeout", float, api.header_timeout_s,
          help="seconds a request's headers (and the TLS handshake) may take to arrive; then a 408 and close")
    f.add("--idle-timeout", float, api.idle_timeout_s,
          help="seconds a connection may sit silent between requests or mid-body before it is closed")
    f.add("--max-connections", int, api.max_connections,
          help="open connections per API process (status streams count); new ones beyond it get a 503")
    f.add("--submit-rate", float, api.submit_rate,
          help="submits per second per API key, per API process (token bucket; 0: unlimited); beyond: 429")
    f.add("--submit-burst", int, api.submit_burst, help="submits a key may make at once under --submit-rate")


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ApiSettings fields of add_connection_flags."""
    return dict(header_timeout_s=args.header_timeout, idle_timeout_s=args.idle_timeout,
                max_connections=args.max_connections, submit_rate=args.submit_rate,
                submit_burst=args.submit_burst)  # fmt: skip


def add_input_limit_flags(f: Flags) -> None:
    api = ApiSettings()
    f.add("--max-body-bytes", int, api.max_body_bytes,
          help="largest JSON request body (image_url endpoints add room for a data: URI); larger: 413")
    f.add("--max-prompt-length", int, api.max_prompt_length,
          help="longest prompt in characters; longer: 422 (the model reads 77 CLIP and 256 T5 tokens)")
    f.add("--max-json-depth", int, api.max_json_depth, help="deepest nesting of a JSON body; deeper: 422")
    f.add("--max-json-items", int, api.max_json_items,
          help="values (array items and object members) in a JSON body; more: 422")  # fmt: skip


def input_limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ApiSettings fields of add_input_limit_flags."""
    return dict(max_body_bytes=args.max_body_bytes, max_prompt_length=args.max_prompt_length,
                max_json_depth=args.max_json_depth, max_json_items=args.max_json_items)  # fmt: skip


def provenance_marks(text: str) -> frozenset[str]:
    """--provenance: comma-separated marks, or none."""
    marks = frozenset(m.strip().lower() for m in text.split(",") if m.strip()) - {"none"}
    if unknown := marks - set(PROVENANCE_MARKS):
        raise argparse.ArgumentTypeError(f"unknown marks {', '.join(sorted(unknown))}; "
                                         f"choose from {','.join(PROVENANCE_MARKS)} or none")  # fmt: skip
    return marks


def add_provenance_flags(f: Flags) -> None:
    f.add("--provenance", provenance_marks, ProvenanceSettings.marks,
          help="marks every output image carries, comma-separated: c2pa (a signed C2PA manifest), metadata "
          "(IPTC/XMP), watermark (invisible); none for no marks (default: all three)")  # fmt: skip
    f.add("--c2pa-cert", Path, help="PEM certificate chain (signer first) that signs the C2PA manifests "
          "(default: a development CA and signer made on first start in <data-dir>/provenance)")  # fmt: skip
    f.add("--c2pa-key", Path, help="the PEM private key of --c2pa-cert's first certificate")


def add_webhook_flags(f: Flags) -> None:
    hooks = WebhookSettings()
    f.add("--webhook-concurrency", int, hooks.concurrency,
          help="webhooks one API process sends at once; a slow receiver holds only its own")  # fmt: skip


def webhook_settings(args: argparse.Namespace) -> WebhookSettings:
    retry = RetryPolicy(max_attempts=args.webhook_attempts, first_delay_s=args.webhook_first_delay)
    return WebhookSettings(retry=retry, concurrency=args.webhook_concurrency)


def add_url_flags(parser: argparse.ArgumentParser, f: Flags, env: Mapping[str, str]) -> None:
    parser.add_argument(
        "--allow-private-urls", action="store_true",
        default=env.get("FLUXSERVE_ALLOW_PRIVATE_URLS", "").lower() in ("1", "true", "yes"),
        help="let webhooks and image URLs reach loopback and private networks",
    )  # fmt: skip
    f.add("--allow-network", action="append", help="a CIDR webhooks and image URLs may reach (repeatable)")
    f.add("--fetch-max-bytes", int, UrlPolicy.max_bytes, help="largest image_url download and upload, in bytes")
    f.add("--fetch-timeout", float, UrlPolicy.total_timeout_s, help="seconds an image_url download may take in all")
    f.add("--fetch-max-redirects", int, UrlPolicy.max_redirects, help="redirects an image_url download may follow")
    f.add("--fetch-concurrency", positive_int, Settings.fetch_concurrency,
          help="image_url downloads a worker runs at once, off the GPU; it claims no more jobs while this "
          "many are pending")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> Settings:
    data_dir: Path = args.data_dir
    return Settings(
        data_dir=data_dir,
        api=ApiSettings(
            host=args.host, port=args.port, tls_port=args.tls_port or None, tls_cert=args.tls_cert,
            tls_key=args.tls_key, public_url=args.public_url, max_pixels=args.max_pixels,
            redux_enabled=args.redux_model is not None, max_upload_bytes=args.fetch_max_bytes,
            auth=auth_required(args), stream_previews=args.stream_previews == "on",
            output_retention_s=args.output_retention_hours * 3600,
            cors_origins=parse_origins(args.cors_origins),
            **connection_settings(args), **input_limit_settings(args),
        ),  # fmt: skip
        store=StoreSettings(db_path=db_path(data_dir), store_url=args.store),
        admission=AdmissionSettings(max_queue_length=args.max_queue_length,
                                    max_queued_per_key=args.max_queued_per_key),  # fmt: skip
        leases=LeaseSettings(lease_s=args.lease_seconds, max_attempts=args.max_attempts),
        worker=WorkerSettings(max_running_per_key=args.max_running_per_key, max_batch=args.batch_size,
                              batch_window_s=args.batch_window_ms / 1000),  # fmt: skip
        upkeep=UpkeepSettings(retention_s=args.retention_hours * 3600),
        storage=StorageSettings(
            root=data_dir / "files", s3=s3_settings(args), upload_url_ttl_s=args.upload_url_minutes * 60,
            upload_quota=args.upload_quota,
            upload_retention_s=args.upload_retention_hours * 3600,
        ),  # fmt: skip
        engine=engine_settings(args),
        webhooks=webhook_settings(args),
        provenance=provenance_settings(args),
        urls=url_policy(args),
        fetch_concurrency=args.fetch_concurrency,
        worker_id=args.worker_id
        or f"{socket.gethostname()}-{Gpu(args.gpu).label if args.gpu else os.getpid()}",
        gpu=args.gpu,
        gpus=args.gpus or (),
    )


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    safety = args.safety_checker
    return EngineSettings(
        model_path=args.model or args.data_dir / TINY_MODEL_SUBDIR,
        model_base=args.model_base,
        device=args.device,
        dtype=args.dtype,
        safety_checker_path=Path(safety) if safety and safety != "none" else None,
        safety_disabled=safety == "none",
        redux_model_path=args.redux_model,
        text_cache_size=args.text_cache,
        warmup=warmup_settings(args),
        memory=args.memory,
        accel=accel_settings(args),
    )


def url_policy(args: argparse.Namespace) -> UrlPolicy:
    return UrlPolicy(
        allow_private=args.allow_private_urls, allowed_networks=tuple(args.allow_network or ()),
        max_bytes=args.fetch_max_bytes, total_timeout_s=args.fetch_timeout, max_redirects=args.fetch_max_redirects,
    )  # fmt: skip


def provenance_settings(args: argparse.Namespace) -> ProvenanceSettings:
    """Checked here, so a key without its certificate stops the command at once."""
    try:
        return ProvenanceSettings(marks=args.provenance, c2pa_cert=args.c2pa_cert, c2pa_key=args.c2pa_key)
    except ValueError as exc:
        raise SystemExit(f"fluxserve: {exc}") from None


def s3_settings(args: argparse.Namespace) -> S3Settings | None:
    """The bucket --blobs names (None: local disk), checked here so a bad one stops the command at once."""
    if args.blobs is None:
        return None
    bucket, prefix = parse_s3_url(args.blobs)
    return S3Settings(
        bucket=bucket, prefix=prefix, endpoint_url=args.s3_endpoint, region=args.s3_region,
        public_base_url=args.s3_public_url, presign_seconds=args.s3_presign_seconds,
    )  # fmt: skip


def auth_required(args: argparse.Namespace) -> bool:
    """auto: a server only loopback can reach needs no keys; one bound to any other address does."""
    if args.auth != "auto":
        return args.auth == "on"
    return args.host not in ("127.0.0.1", "localhost", "::1")


def warmup_settings(args: argparse.Namespace) -> WarmupSettings:
    from fluxserve.core.sizing import PRESETS

    if args.warmup == "off":
        return WarmupSettings()
    levels = None if args.warmup_levels == "auto" else tuple(v.strip() for v in args.warmup_levels.split(",") if v.strip())
    batches = tuple(int(v) for v in args.warmup_batches.split(",") if v.strip())
    return WarmupSettings(sizes=tuple(PRESETS.values()), levels=levels, batches=batches)


def accel_settings(args: argparse.Namespace) -> AccelSettings:
    names = {n.strip() for n in (args.disable_accel or "").split(",") if n.strip()}
    return AccelSettings(disabled=frozenset(names), compile=args.compile, fp8=args.fp8, cuda_graphs=args.cuda_graphs,
                         compile_mode=args.compile_mode, fp8_granularity=args.fp8_granularity,
                         attention=args.attention)  # fmt: skip


def db_path(data_dir: Path) -> Path:
    """The embedded SQLite store's file: the data-dir layout every command and older data dirs share."""
    return data_dir / "jobs.sqlite3"

