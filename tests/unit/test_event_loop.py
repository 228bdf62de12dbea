"""The API process runs on uvloop where it is installed (tests/conftest.py serves live servers on it too)."""

from __future__ import annotations


def test_the_api_runs_on_uvloop():
    import uvloop

    from fluxserve.processes.api_process import event_loop_factory

    assert event_loop_factory() is uvloop.new_event_loop
