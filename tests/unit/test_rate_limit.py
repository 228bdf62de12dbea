"""Token buckets per key, on an injected clock."""

from __future__ import annotations

import pytest

from fluxserve.api.rate_limit import RateLimited, SubmitRateLimiter

pytestmark = pytest.mark.abuse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_one_submit_per_refill():
    clock = Clock()
    limiter = SubmitRateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("alice")
    with pytest.raises(RateLimited) as info:
        limiter.check("alice")
    assert info.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    limiter.check("alice")  # one token came back
    with pytest.raises(RateLimited):
        limiter.check("alice")


def test_tokens_never_pile_up_beyond_the_burst():
    clock = Clock()
    limiter = SubmitRateLimiter(rate=1.0, burst=2, clock=clock)
    clock.now += 3600  # an hour idle
    limiter.check("alice")
    limiter.check("alice")
    with pytest.raises(RateLimited):
        limiter.check("alice")


def test_each_key_has_its_own_bucket_and_refusals_cost_nothing():
    clock = Clock()
    limiter = SubmitRateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.check("alice")
    for _ in range(10):
        with pytest.raises(RateLimited) as info:
            limiter.check("alice")
    assert info.value.retry_after_s == pytest.approx(1.0), "a refused submit does not push the next one back"
    limiter.check("bob")
    limiter.check(None)  # auth off: the one anonymous caller


def test_rate_zero_is_no_limit_and_a_bad_burst_fails_when_built():
    limiter = SubmitRateLimiter(rate=0, burst=0, clock=Clock())
    for _ in range(10_000):
        limiter.check("alice")
    with pytest.raises(ValueError):
        SubmitRateLimiter(rate=1.0, burst=0)
