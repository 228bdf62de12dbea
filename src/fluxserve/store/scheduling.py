"""Which queued job a worker takes next, when several API keys share the queue.

Plain FIFO while one key (or none: auth off) is queued, so queue positions stay exact. With several keys: skip
keys already at their concurrency limit, then take the oldest job of the key served least recently, so a key that
floods the queue with 50 jobs cannot make another key's single job wait behind all of them.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick(
    candidates: Sequence[tuple[str, str | None]],
    running: dict[str | None, int],
    last_served: dict[str | None, float],
    max_per_key: int = 0,
) -> str | None:
    """candidates: (job id, key id) oldest first. The job id to claim, or None if every key is at its limit."""
    allowed = [(job_id, key) for job_id, key in candidates
               if not max_per_key or key is None or running.get(key, 0) < max_per_key]  # fmt: skip
    if not allowed:
        return None
    if len({key for _, key in allowed}) == 1:
        return allowed[0][0]
    order = {key: (last_served.get(key, float("-inf")), index) for index, (_, key) in reversed(list(enumerate(allowed)))}
    chosen_key = min(order, key=lambda k: order[k])
    return next(job_id for job_id, key in allowed if key == chosen_key)
