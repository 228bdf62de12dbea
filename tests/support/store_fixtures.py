"""pytest fixtures for the job-store tests: a hand-moved clock and one store per backend (SQLite, real Redis).

Import them by name into a test module (`from tests.support.store_fixtures import clock, store`) to run that
module's tests against both backends; finished_with_webhook for the webhook-outbox tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from fluxserve.core.jobs import Job, new_job_id
from tests.support.fakes import FakeClock
from tests.support.specs import SPEC


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Any, clock: FakeClock) -> Iterator[Any]:
    if request.param == "sqlite":
        from fluxserve.store.sqlite import SQLiteJobStore

        opened = SQLiteJobStore.open(tmp_path / "jobs.sqlite3", clock=clock)
    else:
        from fluxserve.store.redis import RedisJobStore

        server = request.getfixturevalue("redis_server")
        opened = RedisJobStore.open(server.url, namespace=f"test-{uuid.uuid4().hex}:", clock=clock)
    yield opened
    opened.close()


def finished_with_webhook(store: Any) -> Job:
    """A job that ended (cancelled while queued) with a webhook URL: its delivery is due at once."""
    job = Job(id=new_job_id(), app="fal-ai/flux/schnell", spec=SPEC, webhook_url="http://hook.example/h")
    store.submit(job)
    store.cancel(job.id)
    return job
