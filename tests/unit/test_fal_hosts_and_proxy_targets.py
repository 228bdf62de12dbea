"""fal's hosts mapped to fluxserve's routes: `queue.<host>` and `rest.<host>` requests (api/hosts.py), and the
x-fal-target-url of fal's proxy protocol (api/routes/proxy.py), with every foreign target refused."""

from __future__ import annotations

import pytest

from fluxserve.api.hosts import host_name, routed_path
from fluxserve.api.routes.proxy import TargetRefused, local_target

OWN = "fluxserve.example"


@pytest.mark.parametrize(("target", "path", "query"), [
    ("https://fal.run/fal-ai/flux/schnell", "/fal-ai/flux/schnell", ""),
    ("https://queue.fal.run/fal-ai/flux/schnell?fal_webhook=https%3A%2F%2Fh.example%2F",
     "/queue/fal-ai/flux/schnell", "fal_webhook=https%3A%2F%2Fh.example%2F"),
    ("https://queue.fal.run/fal-ai/flux/requests/abc/status?logs=1", "/queue/fal-ai/flux/requests/abc/status",
     "logs=1"),
    ("https://queue.fal.ai/fal-ai/flux/requests/abc/cancel", "/queue/fal-ai/flux/requests/abc/cancel", ""),
    ("https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3", "/storage/upload/initiate",
     "storage_type=fal-cdn-v3"),
    ("https://rest.alpha.fal.ai/storage/upload/initiate", "/storage/upload/initiate", ""),
    ("https://FAL.RUN/fal-ai/flux/schnell", "/fal-ai/flux/schnell", ""),
    # fluxserve's own URLs, as it hands them out (status_url) or as a client on its queue host builds them
    (f"https://{OWN}:8443/queue/fal-ai/flux/requests/abc", "/queue/fal-ai/flux/requests/abc", ""),
    (f"http://queue.{OWN}/fal-ai/flux/requests/abc", "/queue/fal-ai/flux/requests/abc", ""),
    ("https://queue.fal.run/queue/fal-ai/flux/requests/abc", "/queue/fal-ai/flux/requests/abc", ""),
])  # fmt: skip
def test_fal_and_own_targets_map_to_fluxserve_routes(target, path, query):
    assert local_target(target, OWN) == (path, query)


@pytest.mark.parametrize("target", [
    None, "", "not a url", "ftp://fal.run/x", "https://evil.example/fal-ai/flux/schnell",
    "https://fal.run.evil.example/x", "https://evilfal.run/x", "http://169.254.169.254/latest/meta-data",
    "https://127.0.0.1:6379/", f"https://x.{OWN}/queue/x", "https://fal.run/proxy", "https://[::1/x",
])  # fmt: skip
def test_foreign_targets_are_refused(target):
    with pytest.raises(TargetRefused):
        local_target(target, OWN)


@pytest.mark.parametrize(("host", "path", "routed"), [
    ("queue.localhost", "/fal-ai/flux/schnell", "/queue/fal-ai/flux/schnell"),
    ("queue.localhost", "/fal-ai/flux/requests/abc/status", "/queue/fal-ai/flux/requests/abc/status"),
    ("queue.localhost", "/queue/fal-ai/flux/requests/abc", "/queue/fal-ai/flux/requests/abc"),
    ("queue.localhost", "/proxy", "/proxy"),
    ("rest.localhost", "/storage/upload/initiate", "/storage/upload/initiate"),
    ("localhost", "/fal-ai/flux/schnell", "/fal-ai/flux/schnell"),
    ("myqueue.localhost", "/fal-ai/flux/schnell", "/fal-ai/flux/schnell"),
])  # fmt: skip
def test_the_queue_host_is_served_by_the_queue_routes(host, path, routed):
    assert routed_path(host, path) == routed


@pytest.mark.parametrize(("header", "name"), [
    (b"queue.localhost:8443", "queue.localhost"), (b"Queue.Example.COM", "queue.example.com"),
    (b"[::1]:8000", "[::1]"), (b"[::1]", "[::1]"),
])  # fmt: skip
def test_host_name_drops_the_port(header, name):
    assert host_name({"headers": [(b"host", header)]}) == name
