"""An output's lifetime (X-Fal-Object-Lifecycle-Preference) travels with the job, through both job stores, to
the worker that stores its images; it never splits a batch."""

from __future__ import annotations

from fluxserve.core.jobs import Job, new_job_id
from tests.support.claiming import claim_one
from tests.support.specs import make_spec
from tests.support.store_fixtures import clock, store  # noqa: F401  (both backends)


def test_the_lifetime_reaches_the_worker_and_does_not_split_batches(store):
    app = "fal-ai/flux/schnell"
    short = Job(id=new_job_id(), app=app, spec=make_spec(output_ttl_s=60.0, acceleration="regular"))
    kept = Job(id=new_job_id(), app=app, spec=make_spec(acceleration="regular"))
    store.submit(short)
    store.submit(kept)
    assert short.spec.batch_key == kept.spec.batch_key
    claimed = claim_one(store, "w", 10)
    assert claimed.spec.output_ttl_s == 60.0 and store.get(kept.id).spec.output_ttl_s is None
