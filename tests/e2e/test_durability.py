"""Nothing accepted is lost: real API and worker processes, killed with SIGKILL and stopped with SIGTERM."""

from __future__ import annotations

import functools
import sys
import time

import fal_client
import pytest

from tests.support import waits
from tests.support.fal_clients import point_fal_client
from tests.support.procs import Cluster, Proc

APP = "fal-ai/flux/schnell"
SUBMIT = f"/queue/{APP}"
# Big and long enough on the tiny model (about 2 s on 2 cores) to be killed in the middle.
SLOW = {"prompt": "a slow cat", "image_size": "square_hd", "num_inference_steps": 12, "seed": 1}
FAST = {"prompt": "a quick cat", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 1}


@pytest.fixture
def cluster(tmp_path, tiny_model_dir):
    made = []

    def make(*flags):
        made.append(Cluster(tmp_path / f"data{len(made)}", tiny_model_dir, "--lease-seconds", "1.5", *flags))
        return made[-1]

    yield make
    for c in made:
        c.stop()


# Real processes on the tiny model take seconds per job: every wait here gets a minute.
wait_until = functools.partial(waits.wait_until, timeout=60, every=0.05)


def status(http, handle):
    return http.get(handle["status_url"], params={"logs": "1"}).json()


def test_a_worker_killed_mid_job_has_its_job_finished_by_another(cluster):
    c = cluster()
    c.start_api()
    doomed = c.start_worker("doomed")
    with c.client() as http:
        handle = http.post(SUBMIT, json=SLOW).json()
        wait_until(lambda: any(m["message"].startswith("step") for m in status(http, handle)["logs"] or []),
                   what="the job to be running")  # fmt: skip
        doomed.kill()
        c.start_worker("rescuer")
        end = wait_until(lambda: (s := status(http, handle))["status"] == "COMPLETED" and s, what="completion")
        assert "error" not in end
        assert http.get(handle["response_url"]).json()["seed"] == 1
    job_logs = [m["message"] for m in end["logs"]]
    assert job_logs.count("text encode") == 2, "started twice: once per worker"


def test_a_job_whose_workers_keep_dying_fails_with_a_clear_error(cluster):
    c = cluster("--max-attempts", "1")
    c.start_api()
    doomed = c.start_worker("doomed")
    with c.client() as http:
        handle = http.post(SUBMIT, json=SLOW).json()
        wait_until(lambda: status(http, handle)["status"] == "IN_PROGRESS", what="running")
        doomed.kill()
        end = wait_until(lambda: (s := status(http, handle))["status"] == "COMPLETED" and s, what="give-up")
    assert end["error_type"] == "runner_disconnected" and "died 1 times" in end["error"]


def test_x_fal_no_retry_fails_a_job_whose_worker_died_instead_of_running_it_again(cluster, monkeypatch):
    """Through the real fal_client, as fal documents the header: `headers={"X-Fal-No-Retry": "1"}`."""
    c = cluster()  # the default --max-attempts would run it again on the rescuer
    c.start_api()
    doomed = c.start_worker("doomed")
    fal = point_fal_client(monkeypatch, c.url)
    handle = fal.submit(APP, arguments=SLOW, headers={"X-Fal-No-Retry": "1"})
    with c.client() as http:
        urls = {"status_url": f"{c.url}/queue/fal-ai/flux/requests/{handle.request_id}/status"}
        wait_until(lambda: any(m["message"].startswith("step") for m in status(http, urls)["logs"] or []),
                   what="the job to be running")  # fmt: skip
        doomed.kill()
        c.start_worker("rescuer")
        end = wait_until(lambda: (s := status(http, urls))["status"] == "COMPLETED" and s, what="the failure")
    assert end["error_type"] == "runner_disconnected" and "X-Fal-No-Retry" in end["error"]
    assert [m["message"] for m in end["logs"]].count("text encode") == 1, "never started a second time"
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        handle.get()
    assert raised.value.status_code == 503 and "X-Fal-No-Retry" in raised.value.message


def test_an_api_killed_and_restarted_loses_nothing_queued(cluster):
    c = cluster()
    api = c.start_api()
    with c.client() as http:
        handles = [http.post(SUBMIT, json={**FAST, "seed": i}).json() for i in range(5)]
    api.kill()
    c.start_api()
    c.start_worker("w")
    with c.client() as http:
        ends = [wait_until(lambda h=h: (s := status(http, h))["status"] == "COMPLETED" and s) for h in handles]
        assert all("error" not in e for e in ends)
        assert [http.get(h["response_url"]).json()["seed"] for h in handles] == list(range(5))


def test_sigterm_lets_a_worker_finish_its_job(cluster):
    c = cluster()
    c.start_api()
    worker = c.start_worker("w")
    with c.client() as http:
        handle = http.post(SUBMIT, json=SLOW).json()
        wait_until(lambda: status(http, handle)["status"] == "IN_PROGRESS", what="running")
        assert worker.terminate() == 0
        end = status(http, handle)
    assert end["status"] == "COMPLETED" and "error" not in end, end


def test_ready_reports_warming_then_ready(cluster):
    c = cluster()
    c.start_api()
    with c.client() as http:
        assert http.get("/ready").json() == {"status": "no workers", "workers": {}, "worker_details": {}}
        worker = Proc([sys.executable, "-m", "fluxserve", "worker", *c.common(), "--worker-id", "w",
                       "--warmup", "presets", "--warmup-levels", "none"])  # fmt: skip
        c.procs.append(worker)
        seen = []
        deadline = time.monotonic() + 120
        while not seen or seen[-1] != "ready":
            assert time.monotonic() < deadline, seen
            r = http.get("/ready")
            state = r.json()["status"]
            assert r.status_code == (200 if state == "ready" else 503)
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.05)
    assert "warming" in seen
    for size in ("1024x1024", "768x1024", "576x1024", "1024x768", "1024x576", "512x512"):
        assert f"warm-up {size} at none, batch 1" in worker.output
