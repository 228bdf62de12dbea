"""The job record every layer shares, and the one state machine it moves through.

A request becomes a Job when the API accepts it. A worker claims it, runs it, and writes exactly one
terminal state: completed, failed or cancelled. The allowed transitions are written here and nowhere else;
stores apply them with conditional updates so two writers can never both win.
"""

from __future__ import annotations

import enum
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# to-state -> the states it may be entered from.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    # A running job goes back to the queue when its worker's lease expires.
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),
    JobStatus.COMPLETED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return current in TRANSITIONS[target]


# Jobs agreeing on these run as one batch: same endpoint, size, steps and acceleration level.
BATCH_KEY_FIELDS = ("kind", "width", "height", "num_inference_steps", "acceleration")


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate, fully resolved by the API: sizes rounded, seed drawn. Engine-agnostic."""

    kind: str  # "text" (the schnell endpoint); Redux adds "redux"
    prompt: str
    width: int
    height: int
    num_inference_steps: int
    seed: int
    num_images: int
    guidance_scale: float
    enable_safety_checker: bool
    output_format: str  # "jpeg" | "png" | "webp" (webp: the OpenAI routes only; fal's schema has two)
    sync_mode: bool
    acceleration: str
    # Where the API was reached, so stored image URLs point back at it.
    base_url: str
    # Redux: the image to make variations of (http(s) URL, data: URI, or one of fluxserve's own files).
    image_url: str | None = None
    # A latent preview per step for its /stream (on servers started with --stream-previews). Not in the batch
    # key: a preview is read off the latents and never changes the image.
    previews: bool = False
    # Seconds each stored image lives (X-Fal-Object-Lifecycle-Preference, else the server's default); None:
    # kept until deleted. Not part of batch_key: jobs with different lifetimes still share a pipeline call.
    output_ttl_s: float | None = None
    # JPEG and WebP quality, 0-100 (OpenAI's output_compression); None: the encoder's default (95).
    output_quality: int | None = None

    @property
    def image_seeds(self) -> list[int]:
        """Image k uses seed + k, so image 0 of a batch is the image of num_images=1 with that seed."""
        return [(self.seed + k) % 2**64 for k in range(self.num_images)]

    @property
    def batch_key(self) -> dict[str, Any] | None:
        """What other jobs must share to run in one pipeline call with this one; None: never batched.
        acceleration=none is the bit-exact level: batch composition changes float rounding, so it runs alone."""
        if self.acceleration == "none":
            return None
        return {name: getattr(self, name) for name in BATCH_KEY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSpec:
        return cls(**data)


@dataclass(frozen=True)
class JobError:
    """A failure as the client will see it: HTTP status, fal's error_type, and the response body."""

    status_code: int
    error_type: str
    detail: Any
    # fal marks a start deadline the user set that ran out ("user"); clients then do not retry.
    timeout_type: str | None = None

    @property
    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "error_type": self.error_type}

    @classmethod
    def generation_failed(cls, exc: BaseException) -> JobError:
        return cls(500, "internal_error", f"Generation failed: {type(exc).__name__}: {exc}")

    @classmethod
    def start_timeout(cls) -> JobError:
        return cls(504, "request_timeout", "Request timed out before it started", timeout_type="user")

    @classmethod
    def worker_lost(cls, attempts: int) -> JobError:
        return cls(503, "runner_disconnected", f"The worker running this request died {attempts} times; gave up")

    @classmethod
    def worker_lost_no_retry(cls) -> JobError:
        message = "The worker running this request died; it asked for no retries (X-Fal-No-Retry)"
        return cls(503, "runner_disconnected", message)

    @classmethod
    def bad_image_url(cls, reason: str) -> JobError:
        """Refused or unusable image_url: a 422 naming the field, as if the API had refused it."""
        item = {"loc": ["body", "image_url"], "msg": f"image_url {reason}", "type": "image_url_error"}
        return cls(422, "image_url_error", [item])

    @classmethod
    def cancelled(cls) -> JobError:
        return cls(499, "client_cancelled", "Request was cancelled")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return cls(**data)


@dataclass(frozen=True)
class LogLine:
    message: str
    timestamp: float
    level: str = "INFO"


# The log line a worker writes after each denoising step; /stream reads it back as a progress event.
_STEP = re.compile(r"step (\d+)/(\d+)")


def step_message(step: int, total: int) -> str:
    return f"step {step}/{total}"


def parsed_step(message: str) -> tuple[int, int] | None:
    """(step, total) of a step log line, None for any other line."""
    match = _STEP.fullmatch(message)
    return (int(match[1]), int(match[2])) if match else None


# The level of a log line whose message is a step's latent preview (a JPEG data: URI), written just before
# that step's line. Kept with the job's logs, so it needs no store of its own and goes when the job goes;
# fal's status logs leave it out.
PREVIEW_LEVEL = "PREVIEW"


class Priority(str, enum.Enum):
    """fal's x-fal-queue-priority: a low job runs only while no normal one waits (store/scheduling.py)."""

    NORMAL = "normal"
    LOW = "low"


@dataclass(frozen=True)
class RequestOptions:
    """fal's per-request platform headers that change how a job is handled, not what it generates. Stored as
    one JSON value; a record without one (or a key it lacks) reads as the defaults."""

    # X-Fal-No-Retry: a job whose worker dies fails instead of running again (worker_lost_error).
    no_retry: bool = False
    # X-Fal-Store-IO: 0: its payloads (prompt, result JSON) are not kept once handed out; images stay.
    store_io: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestOptions:
        return cls(**{name: value for name, value in data.items() if name in cls.__dataclass_fields__})


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Job:
    id: str
    app: str
    spec: GenerationSpec
    status: JobStatus = JobStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: JobError | None = None
    worker_id: str | None = None
    lease_until: float | None = None
    # Times a worker claimed it; a job whose workers keep dying is given up after a limit.
    attempts: int = 0
    # fal's X-Fal-Request-Timeout: fail the job if no worker starts it by then.
    start_deadline: float | None = None
    gateway_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    webhook_url: str | None = None
    # Stored blobs of the output, removed with the job when its retention ends.
    blob_keys: list[str] = field(default_factory=list)
    # The API key that submitted it (None when auth is off): it alone (or an admin) may see it.
    key_id: str | None = None
    # fal's x-fal-queue-priority; jobs stored before priorities existed read as normal.
    priority: Priority = Priority.NORMAL
    options: RequestOptions = field(default_factory=lambda: RequestOptions())

    @property
    def handed_out_once(self) -> bool:
        """Its result is given to one reader (run, result call or webhook), then dropped: sync_mode data URIs
        and X-Fal-Store-IO: 0 are not kept in the store."""
        return self.spec.sync_mode or not self.options.store_io

    @property
    def error_or_cancel(self) -> JobError | None:
        """The failure a client is told about: the stored error, or the cancellation."""
        if self.status is JobStatus.CANCELLED:
            return JobError.cancelled()
        return self.error


def worker_lost_error(attempts: int, max_attempts: int, no_retry: bool) -> JobError | None:
    """What a running job whose worker stopped renewing its lease becomes (both stores ask here): None, queued
    again; else the failure it ends with (its retries spent, or it asked for none)."""
    if no_retry:
        return JobError.worker_lost_no_retry()
    return JobError.worker_lost(attempts) if attempts >= max_attempts else None


class DeliveryState(str, enum.Enum):
    """Where a job's webhook delivery stands: sent again at its next time while pending; delivered and failed
    (given up after the retry policy's last attempt) are final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class WebhookDelivery:
    """A terminal job's pending webhook, claimed by one dispatcher at a time."""

    job_id: str
    url: str
    attempts: list[dict[str, Any]]
