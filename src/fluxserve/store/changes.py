"""What a change signal says, on both stores: which jobs changed, so the API wakes only their waiters.

A signal's payload names the changed jobs, one per line: a job id when its record changed (its status, its
output), "+" and the id when only its log grew (a step), so a sync run waiting for the end sleeps through its
job's steps while a stream of them wakes. EVERY_JOB (a write that may touch any job: a lease sweep, a purge, a
list too long to send) wakes every waiter; an empty payload changed no job (a worker report, a key) and wakes
only those waiting for any change. Both backends encode and decode here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EVERY_JOB = "*"
LOG_MARK = "+"
# Longer payloads are sent as EVERY_JOB: a datagram or a pub/sub message stays small, and waking everyone
# once costs only a re-read each.
MAX_PAYLOAD = 2048


@dataclass(frozen=True)
class Changes:
    """What changed since the last wait; false when nothing did (the wait timed out)."""

    jobs: frozenset[str] = frozenset()  # their records changed
    logs: frozenset[str] = frozenset()  # only their logs grew
    every_job: bool = False
    any: bool = False

    def __bool__(self) -> bool:
        return self.any

    def touches(self, job_id: str, logs: bool = False) -> bool:
        """Whether a waiter for job_id (for its log lines too when `logs`) must re-read."""
        return self.every_job or job_id in self.jobs or (logs and job_id in self.logs)

    def __or__(self, other: Changes) -> Changes:
        return Changes(self.jobs | other.jobs, self.logs | other.logs, self.every_job or other.every_job,
                       self.any or other.any)  # fmt: skip


NOTHING = Changes()


def encode(jobs: Iterable[str] | None, logs: Iterable[str] = ()) -> str:
    """jobs None: any job may have changed."""
    if jobs is None:
        return EVERY_JOB
    payload = "\n".join(dict.fromkeys([*jobs, *(LOG_MARK + job_id for job_id in logs)]))
    return EVERY_JOB if len(payload) > MAX_PAYLOAD else payload


# What processes of the versions before job-naming signals send (the doorbell's "." and Redis' "1"): read as
# "any job", so a rolling upgrade never leaves a waiter to its fallback timeout. Job ids are UUIDs.
UNNAMED = (".", "1")


def decode(payload: str) -> Changes:
    if payload == EVERY_JOB or payload in UNNAMED:
        return Changes(every_job=True, any=True)
    names = payload.split("\n") if payload else []
    logs = frozenset(name[1:] for name in names if name.startswith(LOG_MARK))
    jobs = frozenset(name for name in names if name and not name.startswith(LOG_MARK))
    return Changes(jobs, logs, any=True)
