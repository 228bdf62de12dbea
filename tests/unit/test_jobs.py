"""The job state machine: one table of transitions, terminal states final."""

from __future__ import annotations

import itertools

from fluxserve.core.jobs import TERMINAL, JobStatus, can_transition


def test_terminal_states_are_final():
    for terminal, target in itertools.product(TERMINAL, JobStatus):
        assert not can_transition(terminal, target)


def test_the_normal_life_of_a_job():
    assert can_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    assert can_transition(JobStatus.RUNNING, JobStatus.COMPLETED)
    assert can_transition(JobStatus.RUNNING, JobStatus.FAILED)


def test_queued_jobs_cannot_complete_without_running():
    assert not can_transition(JobStatus.QUEUED, JobStatus.COMPLETED)


def test_a_running_job_can_be_requeued_or_cancelled():
    assert can_transition(JobStatus.RUNNING, JobStatus.QUEUED)
    assert can_transition(JobStatus.RUNNING, JobStatus.CANCELLED)
    assert can_transition(JobStatus.QUEUED, JobStatus.CANCELLED)
