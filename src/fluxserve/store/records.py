"""The one codec between records and what the stores hold (SQLite rows, Redis hash fields), so both backends
read and write a Job, an API key, a usage row and an error the same way."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from fluxserve.core.accounts import ApiKey, megapixels
from fluxserve.core.jobs import GenerationSpec, Job, JobError, JobStatus, Priority, RequestOptions
from fluxserve.store.scheduling import RANK, Candidate

# A job's stored fields, in the order SQLite selects its columns.
JOB_FIELDS = ("id", "app", "spec", "status", "created_at", "started_at", "finished_at", "output", "error",
              "worker_id", "lease_until", "attempts", "start_deadline", "gateway_request_id", "webhook_url",
              "blob_keys", "key_id", "priority", "options")  # fmt: skip
KEY_FIELDS = ("key_id", "secret_sha256", "name", "admin", "created_at", "revoked")
USAGE_FIELDS = ("day", "key_id", "app", "requests", "images", "megapixels")


def package_text(name: str) -> str:
    """A file shipped beside this module (the SQL schema, the Lua scripts)."""
    return resources.files("fluxserve.store").joinpath(name).read_text(encoding="utf-8")


def new_job_fields(job: Job) -> dict[str, Any]:
    """What a submit stores (a new job is queued and unclaimed); None: not stored."""
    return {"id": job.id, "app": job.app, "spec": json.dumps(job.spec.to_dict()), "created_at": job.created_at,
            "start_deadline": job.start_deadline, "gateway_request_id": job.gateway_request_id,
            "webhook_url": job.webhook_url or None, "blob_keys": "[]", "key_id": job.key_id or None,
            "priority": RANK[job.priority], "options": json.dumps(job.options.to_dict())}  # fmt: skip


def job_from_fields(f: Mapping[str, Any]) -> Job:
    """A Job from its stored fields (typed SQLite values or Redis strings; a missing field is None). Decoded
    with orjson: every status read decodes a job, and the standard library's json was a tenth of the read."""
    return Job(
        id=f["id"],
        app=f["app"],
        spec=GenerationSpec.from_dict(orjson.loads(f["spec"])),
        status=JobStatus(f["status"]),
        created_at=float(f["created_at"]),
        started_at=_float(f.get("started_at")),
        finished_at=_float(f.get("finished_at")),
        output=orjson.loads(f["output"]) if f.get("output") else None,
        error=JobError.from_dict(orjson.loads(f["error"])) if f.get("error") else None,
        worker_id=f.get("worker_id"),
        lease_until=_float(f.get("lease_until")),
        attempts=int(f.get("attempts") or 0),
        start_deadline=_float(f.get("start_deadline")),
        gateway_request_id=f["gateway_request_id"],
        webhook_url=f.get("webhook_url"),
        blob_keys=orjson.loads(f.get("blob_keys") or "[]"),
        key_id=f.get("key_id"),
        priority=priority_of(f.get("priority")),
        options=options_of(f.get("options")),
    )


# Stored priorities are RANK values; a job stored without one (before priorities existed) is normal.
_BY_RANK = {rank: priority for priority, rank in RANK.items()}


def priority_of(stored: Any) -> Priority:
    return Priority.NORMAL if stored is None or stored == "" else _BY_RANK[int(stored)]


def spec_without_payload(stored: str) -> str:
    """A finished job's stored spec with what the client sent as content (prompt, image_url: perhaps a data
    URI) erased: the parameters stay, for the record."""
    return json.dumps({**json.loads(stored), "prompt": "", "image_url": None})


def options_of(stored: str | None) -> RequestOptions:
    """A job's stored RequestOptions; a record from before they were stored has the defaults."""
    return RequestOptions.from_dict(json.loads(stored)) if stored else RequestOptions()


def candidate(job_id: str, key_id: str | None, spec: str, priority: Any = None) -> Candidate:
    """A queued job, from its stored key, spec and priority, as the scheduling decision sees it. A claim
    decodes one per candidate (256 at a deep queue): orjson, as for every job read."""
    decoded = GenerationSpec.from_dict(orjson.loads(spec))
    return Candidate.of(job_id, key_id or None, decoded, RANK[priority_of(priority)])


def dump_error(error: JobError) -> str:
    return json.dumps(error.to_dict())


def completion_fields(output: dict[str, Any], blob_keys: list[str]) -> dict[str, str]:
    return {"output": json.dumps(output), "blob_keys": json.dumps(blob_keys)}


@dataclass(frozen=True)
class UsageIncrement:
    """What one completed job adds to its key's usage for the day."""

    images: int
    megapixels: int

    @classmethod
    def of(cls, output: dict[str, Any]) -> UsageIncrement:
        return cls(len(output.get("images", [])), megapixels(output))


def usage_owner(key_id: str | None) -> str:
    """Usage (and last-served times) of jobs submitted without a key are kept under ""."""
    return key_id or ""


def usage_row(day: str, key_id: str, app: str, requests: int, images: int, megapixels: int) -> dict[str, Any]:
    return dict(zip(USAGE_FIELDS, (day, key_id, app, int(requests), int(images), int(megapixels))))


def key_from_fields(f: Mapping[str, Any]) -> ApiKey:
    return ApiKey(f["key_id"], f["secret_sha256"], f["name"], _flag(f["admin"]), float(f["created_at"]),
                  _flag(f.get("revoked") or 0))  # fmt: skip


def key_fields(key: ApiKey) -> dict[str, Any]:
    return {"key_id": key.key_id, "secret_sha256": key.secret_sha256, "name": key.name, "admin": int(key.admin),
            "created_at": key.created_at, "revoked": int(key.revoked)}  # fmt: skip


def worker_states(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{worker id: state} from worker_reports()."""
    return {worker: report["state"] for worker, report in reports.items()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _flag(value: Any) -> bool:
    return int(value) == 1
