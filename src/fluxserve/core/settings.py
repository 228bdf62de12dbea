"""Typed settings, built once at the edge (the CLI) and passed down. Nothing here reads the environment."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_MAX_PIXELS = 2048 * 2048
TINY_MODEL_SUBDIR = Path("models") / "flux-schnell-tiny"
# The development C2PA CA and signer, made on first start when no --c2pa-cert is given.
PROVENANCE_SUBDIR = Path("provenance")


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    # HTTPS port for fal_client, which hard-codes https://. None: no HTTPS; 0: any free port.
    tls_port: int | None = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Absolute base for image URLs (e.g. behind a proxy); else the URL the request came in on.
    public_url: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Largest upload, and largest data: URI image_url (checked at submit, as the worker checks it).
    max_upload_bytes: int = 20 * 1024 * 1024
    # Input caps, enforced before a request costs anything (api/body_limits.py, api/json_limits.py). A JSON
    # body over max_body_bytes is a 413 as it streams in; endpoints taking image_url add room for a data: URI.
    max_body_bytes: int = 256 * 1024
    # The model reads 77 CLIP and 256 T5 tokens (about 1000 characters of English); this leaves room for any
    # real prompt while a 25 MB one is a 422 at the door.
    max_prompt_length: int = 5000
    # fal's inputs nest two levels and hold a dozen values; these only stop a body from being a bomb.
    max_json_depth: int = 32
    max_json_items: int = 1000
    # Require API keys (`Authorization: Key id:secret`). The CLI turns it on for any non-loopback bind.
    auth: bool = False
    # Whether the workers load a Redux prior; without one the Redux endpoint says so instead of queueing.
    redux_enabled: bool = False
    # Connection bounds on the API listeners (connection_limits.py). A request's head (and on HTTPS the TLS
    # handshake) must arrive within header_timeout_s of the connection opening or of its first byte.
    header_timeout_s: float = 10.0
    # How long the server waits on a silent client: between requests (keep-alive) and mid-body.
    idle_timeout_s: float = 5.0
    # Open connections per API process, all listeners together; beyond it new ones get a 503 and are closed.
    # Long-lived status streams count, so keep it well above the number of concurrent streams expected.
    max_connections: int = 1000
    # Submits per second each key may make (token bucket, per API process; 0: unlimited), and the burst.
    submit_rate: float = 0.0
    submit_burst: int = 20
    # Step events of /stream carry a small JPEG of the current latents (a fixed 16->RGB projection, computed
    # on the worker only for jobs submitted through /stream).
    stream_previews: bool = False
    # Browser origins (scheme://host[:port], or "*") allowed to call the API (api/cors.py); empty: no CORS.
    cors_origins: tuple[str, ...] = ()
    # How long a stored output image lives when the request's X-Fal-Object-Lifecycle-Preference does not say;
    # 0: until an operator deletes it. fal's own default: an account without storage settings has
    # expiration_duration_seconds null, no auto-expiration, so a job record's purge never takes its images.
    output_retention_s: float = 0.0


DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class StoreSettings:
    """Where the job store lives (store/open.py)."""

    db_path: Path
    # redis://host:port/db to share one queue between machines; None: the embedded SQLite file at db_path.
    store_url: str | None = None


@dataclass(frozen=True)
class AdmissionSettings:
    """Who may join the queue (api/admission.py). Both caps are checked in the store's insert transaction, for
    the queue and the sync endpoint alike."""

    # Submissions beyond this many queued requests get a 429 (fal_max_queue_length can lower it).
    max_queue_length: int = 10_000
    # One API key's share of the queue: its submits beyond this many of its own queued requests get a 429, so
    # one key's flood cannot lock the others out (0: no share; requests without a key, auth off, are exempt).
    max_queued_per_key: int = 1_000


@dataclass(frozen=True)
class WaitingSettings:
    """How a request that waits on its job (sync run, status stream) watches it (api/waiting.py)."""

    # It re-reads its job when the store signals a change, and at least this often should a signal be lost.
    poll_interval_s: float = 0.25
    # Comment lines on an idle status stream, so proxies and clients do not time it out.
    keepalive_s: float = 15.0


@dataclass(frozen=True)
class LeaseSettings:
    """A running job's lease: the worker renews it, and the worker and upkeep both requeue a job whose lease
    ran out, so both read these."""

    # A worker renews its job's lease every lease_s/3; a job whose lease runs out is requeued.
    lease_s: float = 30.0
    # A job whose workers died this many times fails instead of being requeued again.
    max_attempts: int = 3


@dataclass(frozen=True)
class WorkerSettings:
    """Which queued jobs a worker takes and how it batches them (worker/loop.py's WorkerConfig)."""

    # Per-key concurrency limit (0: none); excess requests wait in the queue, never rejected.
    max_running_per_key: int = 0
    # Cross-request batching in the workers.
    max_batch: int = 4
    batch_window_s: float = 0.01


@dataclass(frozen=True)
class UpkeepSettings:
    """The API processes' retention sweep (processes/upkeep.py)."""

    # Finished results and their files are removed after this long.
    retention_s: float = 7 * DAY_S
    sweep_interval_s: float = 60.0


# The schemes an untrusted URL may use, with the port each implies.
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlPolicy:
    """What an untrusted URL (webhook target, image_url) may reach, and how much time and data a fetch may take.
    net/safe_http.py enforces it where the connection is opened; the CLI flags take their defaults from here."""

    allow_private: bool = False  # operator switch: loopback/private/CGNAT targets (e.g. an in-cluster hook)
    allowed_networks: tuple[str, ...] = ()  # extra CIDRs allowed whatever their class, e.g. "127.0.0.1/32"
    schemes: tuple[str, ...] = ("http", "https")
    max_bytes: int = 20 * 2**20
    connect_timeout_s: float = 5
    read_timeout_s: float = 15
    # The whole of one image_url download, redirects included (README and docs/security.md promise 10 s and 5).
    total_timeout_s: float = 10
    max_redirects: int = 5

    def __post_init__(self) -> None:
        # Fail when the policy is built (at startup), not on the first webhook hours later.
        unsupported = set(self.schemes) - set(DEFAULT_PORTS)
        if unsupported:
            raise ValueError(f"unsupported schemes {sorted(unsupported)}; only http and https can be fetched")
        if self.max_bytes <= 0 or self.max_redirects < 0:
            raise ValueError("max_bytes must be positive and max_redirects not negative")
        if min(self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        self.networks()

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """allowed_networks parsed; a bad CIDR raises ValueError."""
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.allowed_networks)

    def allows_network(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True if ip (or the IPv4 address an IPv4-mapped IPv6 address stands for) is in allowed_networks."""
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in net for c in candidates for net in self.networks() if c.version == net.version)


def is_retryable(status_code: int | None) -> bool:
    """Whether a delivery that ended this way may succeed later. None (no answer: connection error or
    timeout), 429 and 5xx may; 2xx succeeded, and other 3xx/4xx answers will not change."""
    return status_code is None or status_code == 429 or 500 <= status_code <= 599


@dataclass(frozen=True)
class RetryPolicy:
    """fal retries a failed webhook "10 times in the span of 2 hours". With these defaults the delays are
    15 s, 30 s, ... 1920 s, then 3600 s: 9 delays totalling 7425 s (about 2 h 4 min)."""

    max_attempts: int = 10
    first_delay_s: float = 15.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    timeout_s: float = 15.0  # the whole of one attempt: connect, send, and read the answer

    # Also reachable as RetryPolicy.is_retryable, next to the schedule it goes with.
    is_retryable = staticmethod(is_retryable)

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt number `attempt` (1-based) failed, before the next one."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        exponent = min(attempt - 1, 64)  # far past any cap; keeps the float from overflowing
        return min(self.max_delay_s, self.first_delay_s * self.factor**exponent)

    def schedule(self) -> tuple[float, ...]:
        """The delays between max_attempts attempts."""
        return tuple(self.delay_after(n) for n in range(1, self.max_attempts))

    def should_retry(self, attempt: Any) -> bool:
        """attempt: a net.webhooks.Attempt (its number and whether it was final)."""
        return not attempt.final and attempt.number < self.max_attempts

    def client_policy(self, base: UrlPolicy) -> UrlPolicy:
        """base with its time limits cut to timeout_s, for the SafeClient that delivers webhooks."""
        return replace(
            base,
            total_timeout_s=min(base.total_timeout_s, self.timeout_s),
            read_timeout_s=min(base.read_timeout_s, self.timeout_s),
            connect_timeout_s=min(base.connect_timeout_s, self.timeout_s),
        )


@dataclass(frozen=True)
class WebhookSettings:
    # fal's default: 10 tries over about two hours.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_interval_s: float = 0.5
    # Deliveries one API process sends at once; a slow receiver holds one of them, never the others' webhooks.
    concurrency: int = 16


# SigV4 presigned URLs live at most 7 days; S3 refuses longer ones when they are used, not when signed.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
S3_ADDRESSING_STYLES = ("path", "virtual", "auto")


def normalize_prefix(prefix: str) -> str:
    """'' stays ''; 'a/b' and '/a/b/' become 'a/b/', so prefix + key is always a clean object key."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix/'); the prefix as normalize_prefix leaves it."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"an s3:// URL takes no query or fragment: {url!r}")
    return parts.netloc, normalize_prefix(parts.path)


@dataclass(frozen=True)
class S3Settings:
    """Where the bucket is and how clients reach its objects (blobs/s3.py). None credentials: boto3's usual
    chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # None: AWS itself; set it for MinIO, R2, moto
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    public_base_url: str | None = None  # a CDN or public bucket URL; without it url() presigns
    presign_seconds: int = MAX_PRESIGN_SECONDS
    addressing_style: str = "path"  # path-style works on MinIO/moto without wildcard DNS

    def __post_init__(self) -> None:
        # Fail at startup, not on the first request, when the configuration cannot work.
        if not self.bucket:
            raise ValueError("S3 bucket name is empty")
        if not 1 <= self.presign_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"presign_seconds must be 1..{MAX_PRESIGN_SECONDS}, not {self.presign_seconds}")
        if self.addressing_style not in S3_ADDRESSING_STYLES:
            style = self.addressing_style
            raise ValueError(f"addressing_style must be one of {S3_ADDRESSING_STYLES}, not {style!r}")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")


@dataclass(frozen=True)
class StorageSettings:
    root: Path
    # An S3-compatible bucket shared by all nodes for images and uploads; None: local disk at root.
    s3: S3Settings | None = None
    # An upload URL (POST /storage/upload/initiate) is good for one PUT by anyone holding it, within this long.
    upload_url_ttl_s: float = 3600.0
    # Uploads one API key may hold at once (stored, or URLs issued and not yet expired); bytes are bounded by
    # this times ApiSettings.max_upload_bytes. 0: no quota.
    upload_quota: int = 100
    # Uploaded files are removed this long after they were uploaded (outputs: UpkeepSettings.retention_s).
    upload_retention_s: float = DAY_S


# The marks every output image can carry (provenance/): a signed C2PA manifest, IPTC/XMP metadata, and an
# invisible watermark. --provenance picks among them.
PROVENANCE_MARKS = ("c2pa", "metadata", "watermark")


@dataclass(frozen=True)
class ProvenanceSettings:
    """What each output image says of where it came from (provenance/stamp.py)."""

    marks: frozenset[str] = frozenset(PROVENANCE_MARKS)
    # The operator's C2PA signing certificate chain (leaf first, PEM) and its private key; None: a development
    # CA and leaf generated on first start under <data-dir>/provenance (clearly labelled as such).
    c2pa_cert: Path | None = None
    c2pa_key: Path | None = None

    def __post_init__(self) -> None:
        if unknown := set(self.marks) - set(PROVENANCE_MARKS):
            known = ", ".join(PROVENANCE_MARKS)
            raise ValueError(f"unknown provenance marks {sorted(unknown)}; known: {known}")
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise ValueError("give both --c2pa-cert and --c2pa-key, or neither")


# The SDPA backends --attention may name (engine/attention.py maps each to its diffusers backend).
ATTENTION_BACKENDS = ("cudnn", "flash", "efficient", "math")


@dataclass(frozen=True)
class AccelSettings:
    """How the accelerated levels are built (engine/accel.py, engine/switches.py). One default per value: the CLI
    flags take theirs from here."""

    # Optimisations switched off by the operator, by name (e.g. {"compile"}).
    disabled: frozenset[str] = frozenset()
    # "auto": on CUDA only; "on" forces (tests, CPU experiments); "off".
    compile: str = "auto"
    fp8: str = "auto"
    cuda_graphs: str = "auto"
    # torch.compile's mode and backend. "default" with regional compilation compiles in seconds and runs within a
    # few percent of max-autotune; the backend is a name or a callable (tests use a CPU backend such as aot_eager).
    compile_mode: str = "default"
    compile_backend: Any = "inductor"
    # Per-row scales: each token row gets its own quantisation grid, so a batchmate never changes your result.
    fp8_granularity: str = "row"
    # "auto": on CUDA, the faster of cuDNN and flash SDPA at the model's shape; "default": PyTorch's own choice;
    # or a backend by name (cudnn, flash, efficient, math).
    attention: str = "auto"


@dataclass(frozen=True)
class WarmupSettings:
    """Shapes run once at worker start, so no request pays a first-call compile."""

    # (width, height) pairs; empty: no warm-up.
    sizes: tuple[tuple[int, int], ...] = ()
    # None: the levels that compile on this device (regular and high on CUDA; none elsewhere, where nothing compiles).
    levels: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class EngineSettings:
    # A diffusers folder, or a single .safetensors transformer file (then model_base gives the rest).
    model_path: Path
    model_base: Path | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    # A folder holding a StableDiffusionSafetyChecker (+ its CLIP feature extractor). None: look next to
    # the model. Operators who run without one must say so explicitly (safety_disabled).
    safety_checker_path: Path | None = None
    safety_disabled: bool = False

    # Repeated prompts reuse their text embeddings; entries are ~2 MB each on a real model.
    text_cache_size: int = 64
    accel: AccelSettings = field(default_factory=AccelSettings)
    # "low": fit a 24 GB GPU (fp8 weights for every level, components moved to the GPU only while they run).
    memory: str = "normal"
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    # A FluxPriorReduxPipeline folder (the FLUX.1-Redux-dev layout); None: no Redux endpoint.
    redux_model_path: Path | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api: ApiSettings
    store: StoreSettings
    storage: StorageSettings
    engine: EngineSettings
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    waiting: WaitingSettings = field(default_factory=WaitingSettings)
    leases: LeaseSettings = field(default_factory=LeaseSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    upkeep: UpkeepSettings = field(default_factory=UpkeepSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    urls: UrlPolicy = field(default_factory=UrlPolicy)
    provenance: ProvenanceSettings = field(default_factory=ProvenanceSettings)
    worker_id: str = "worker-0"
    # The GPU this worker runs on (an index as nvidia-smi numbers it, or a UUID); None: not pinned to one.
    gpu: str | None = None
    # image_url fetches one worker runs at once on its fetch threads, so a slow one holds up only its own job
    # while the GPU runs others; while this many are pending the worker claims nothing more.
    fetch_concurrency: int = 4
    # `serve`: the GPUs to start one worker on each; empty: every visible GPU.
    gpus: tuple[str, ...] = ()

    @property
    def webhook_key_path(self) -> Path:
        return self.data_dir / "webhook-ed25519.pem"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def provenance_dir(self) -> Path:
        return self.data_dir / PROVENANCE_SUBDIR
