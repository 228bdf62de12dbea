"""The scheduling decision on plain data: the table of cases (tests/support/scheduling_cases.py) that the
store contract also runs through each backend."""

from __future__ import annotations

import pytest

from fluxserve.store.scheduling import RANK, Candidate, ClaimPolicy, KeyLoad, plan
from tests.support.scheduling_cases import CASES, Case, Queued


def load_of(case: Case) -> KeyLoad:
    running: dict[str | None, int] = {}
    for served in case.history:
        if not served.done:
            running[served.key] = running.get(served.key, 0) + 1
    return KeyLoad(running, {served.key: float(at) for at, served in enumerate(case.history, start=1)})


def candidate(job: Queued) -> Candidate:
    return Candidate.of(job.name, job.key, job.spec, RANK[job.priority])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_the_decision(case: Case):
    assert tuple(plan([candidate(job) for job in case.queue], load_of(case), case.policy)) == case.expected


def test_the_plan_does_not_change_its_inputs():
    running, served = {"A": 1}, {"A": 1.0}
    candidates = [candidate(Queued("a1", key="A")), candidate(Queued("b1", key="B"))]
    assert plan(candidates, KeyLoad(running, served), ClaimPolicy(max_batch=2, max_running_per_key=2))
    assert running == {"A": 1} and served == {"A": 1.0}
