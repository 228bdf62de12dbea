"""fal_webhook checked at submit under the delivery's URL policy. Nothing here touches the network: names go
to an injected resolver, and no connection is ever opened (the check has no connector to call)."""

from __future__ import annotations

import asyncio

import pytest

from fluxserve.core.errors import InputError
from fluxserve.net.safe_http import UrlPolicy
from fluxserve.net.webhooks import WebhookTargets, checked_webhook_target

pytestmark = pytest.mark.abuse

PUBLIC = "93.184.216.34"


def no_lookup(host: str, port: int) -> list[str]:
    pytest.fail(f"{host} was looked up: an IP literal must be checked without a resolver")


def resolving_to(*addresses: str):
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://127.0.0.1./hook", "http://[::1]/hook", "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook", "http://169.254.169.254/latest", "http://[fe80::1]/hook",
    "http://[::ffff:10.0.0.1]/hook", "http://0.0.0.0/hook", "http://100.64.0.1/hook",
])  # fmt: skip
def test_refused_literals_name_fal_webhook_without_a_lookup(url):
    with pytest.raises(InputError) as refused:
        WebhookTargets(UrlPolicy(), resolver=no_lookup).check(url)
    assert refused.value.field == "fal_webhook" and refused.value.location == "query"
    assert refused.value.kind == "url_not_allowed"


def test_a_name_is_refused_when_any_of_its_addresses_is():
    resolve = resolving_to(PUBLIC, "10.0.0.5")
    with pytest.raises(InputError, match="hook.example"):
        WebhookTargets(UrlPolicy(), resolver=resolve).check("https://hook.example/h?token=s")
    assert resolve.asked == [("hook.example", 443)]


def test_public_targets_and_allowed_networks_pass_unchanged():
    url = "https://hook.example/h?token=s"
    assert WebhookTargets(UrlPolicy(), resolver=resolving_to(PUBLIC)).check(url) == url
    loopback = WebhookTargets(UrlPolicy(allowed_networks=("127.0.0.0/8",)), resolver=no_lookup)
    assert loopback.check("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"


def test_a_name_that_does_not_resolve_now_is_left_to_delivery():
    def down(host: str, port: int) -> list[str]:
        raise OSError("temporary failure in name resolution")

    assert WebhookTargets(UrlPolicy(), resolver=down).check("http://hook.example/") == "http://hook.example/"


@pytest.mark.parametrize("url", ["ftp://hook.example/", "http:///nohost", "http://user:pw@hook.example/"])
def test_malformed_targets_are_url_parsing_errors(url):
    with pytest.raises(InputError) as refused:
        WebhookTargets(UrlPolicy(), resolver=no_lookup).check(url)
    assert refused.value.field == "fal_webhook" and refused.value.kind == "url_parsing"


def test_without_configured_targets_only_public_addresses_pass():
    assert asyncio.run(checked_webhook_target(None, None)) is None
    with pytest.raises(InputError):
        asyncio.run(checked_webhook_target(None, "http://127.0.0.1/hook"))
