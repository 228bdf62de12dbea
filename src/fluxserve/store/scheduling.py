"""The one decision of which queued jobs a worker claims now, as one batch. Pure: both stores gather the
candidates and the keys' load, call plan(), and claim what it returns.

The rules, in order:
- a key already running `max_running_per_key` jobs waits, and every job the plan takes counts towards its key's
  limit, batch-mates included;
- higher priority first (fal's x-fal-queue-priority: every queued normal job before any low one; RANK);
- among equal priority: plain FIFO while one key (or none: auth off) is queued, so queue positions stay exact;
  with several keys, the oldest job of the key served least recently, so a key that floods the queue with 50
  jobs cannot make another key's single job wait behind all of them. A key the plan takes a job of counts as
  served just now, so batch-mates are shared out the same way;
- batch-mates share the first job's batch key (jobs without one, the bit-exact level, run alone), up to
  `max_batch` jobs, and at most `max_fetches` of them need their input image fetched first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fluxserve.core.jobs import GenerationSpec, Priority

# How far down the queue (by rank, then oldest first) a claim looks for jobs: bounds the work of every claim.
CANDIDATE_SCAN = 256

# Candidate.priority of each of fal's priorities: higher runs first. Both stores keep the rank, and list (and
# count queue positions) by rank, then submission order: the order this plan takes jobs in when fairness does
# not reorder them.
RANK = {Priority.NORMAL: 1, Priority.LOW: 0}
TOP_RANK = max(RANK.values())

# What jobs must share to run in one pipeline call (GenerationSpec.batch_key, as a hashable value).
BatchKey = tuple[tuple[str, Any], ...]


def batch_key(spec: GenerationSpec) -> BatchKey | None:
    """None: the job is never batched."""
    fields = spec.batch_key
    return None if fields is None else tuple(sorted(fields.items()))


@dataclass(frozen=True)
class Candidate:
    """A queued job as the decision sees it; candidates are listed by rank, then oldest first."""

    job_id: str
    key_id: str | None
    batch_key: BatchKey | None
    # Its input image (Redux' image_url) is fetched before it can run: counted against max_fetches.
    needs_fetch: bool = False
    # Higher runs first: RANK of the job's Priority.
    priority: int = 0

    @classmethod
    def of(cls, job_id: str, key_id: str | None, spec: GenerationSpec, priority: int = RANK[Priority.NORMAL]
           ) -> Candidate:  # fmt: skip
        return cls(job_id, key_id, batch_key(spec), spec.image_url is not None, priority)


@dataclass(frozen=True)
class KeyLoad:
    """The fairness inputs, with one meaning in every store: per API key (None: jobs submitted without one),
    the jobs running now, and when a job of it was last claimed (batch-mates included)."""

    running: Mapping[str | None, int] = field(default_factory=dict)
    last_served: Mapping[str | None, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimPolicy:
    max_batch: int = 1
    # A key with this many running jobs waits while other keys' jobs run (0: no limit).
    max_running_per_key: int = 0
    # Jobs needing an image fetch the batch may hold (None: no limit); the worker's free fetch threads.
    max_fetches: int | None = None
    # Take only jobs with this batch key: filling up a batch whose first jobs are already claimed.
    batch_key: BatchKey | None = None


def plan(candidates: Sequence[Candidate], load: KeyLoad, policy: ClaimPolicy) -> list[str]:
    """The ids of the jobs to claim now, as one batch, in the order they were chosen; [] to wait."""
    running = dict(load.running)
    # Rank of a key's turn: never served first, then least recently served; keys served by this plan last.
    turn: dict[str | None, tuple[int, float]] = {key: (0, at) for key, at in load.last_served.items()}
    chosen: list[Candidate] = []
    want = policy.batch_key
    while len(chosen) < policy.max_batch:
        fetches = sum(c.needs_fetch for c in chosen)
        eligible = [c for c in candidates if c not in chosen and _may_run(c, running, policy, fetches)
                    and (want is None and not chosen or c.batch_key == want)]  # fmt: skip
        if not eligible:
            break
        job = _next(eligible, turn)
        chosen.append(job)
        running[job.key_id] = running.get(job.key_id, 0) + 1
        turn[job.key_id] = (1, len(chosen))
        if job.batch_key is None:
            break
        want = job.batch_key
    return [c.job_id for c in chosen]


def _may_run(job: Candidate, running: dict[str | None, int], policy: ClaimPolicy, fetches: int) -> bool:
    limit = policy.max_running_per_key
    if limit and job.key_id is not None and running.get(job.key_id, 0) >= limit:
        return False
    return not job.needs_fetch or policy.max_fetches is None or fetches < policy.max_fetches


def _next(eligible: list[Candidate], turn: dict[str | None, tuple[int, float]]) -> Candidate:
    top = max(c.priority for c in eligible)
    first = [c for c in eligible if c.priority == top]
    keys = list(dict.fromkeys(c.key_id for c in first))  # in the order of each key's oldest job
    if len(keys) == 1:
        return first[0]
    never = (0, float("-inf"))
    key = min(keys, key=lambda k: (turn.get(k, never), keys.index(k)))
    return next(c for c in first if c.key_id == key)
