"""The provider's limits as the runner takes them, on the real Redis: requests, input and
output tokens per minute per model, output reserved at max_tokens and the unused part
given back, a 429's pause shared by every worker, and no call without Redis."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.servers import free_port
from jobs import ratelimit as shared
from workers import ratelimit

MODEL, OTHER = "claude-haiku-4-5", "claude-sonnet-4-6"
# Output tokens: 1000 a minute, so an unused 100 tokens takes 6 s to come back by itself.
LIMITS = {MODEL: {"rpm": 600, "input_tpm": 10_000, "output_tpm": 1000}, "*": {"rpm": 30}}


@pytest.fixture(autouse=True)
def _limits(settings):
    """Limiters are cached per model: each test builds them from its own settings."""
    settings.AIJOBS_PROVIDER_LIMITS = LIMITS
    ratelimit.limiter_for.cache_clear()
    yield
    ratelimit.limiter_for.cache_clear()


def test_limits_come_from_the_models_row_or_the_default_row():
    by_name = {limit.name: limit for limit in ratelimit.limiter_for(MODEL).limits}

    assert (by_name["requests"].per_minute, by_name["requests"].burst) == (600, 10)
    assert (by_name["input_tokens"].burst, by_name["output_tokens"].burst) == (10_000, 1000)
    (default,) = ratelimit.limiter_for(OTHER).limits
    assert (default.name, default.per_minute, default.burst) == ("requests", 30, 1)


def test_requests_go_one_seconds_worth_at_once():
    waits = [ratelimit.acquire(OTHER, input_tokens=1, max_tokens=1) for _ in range(2)]

    assert waits[0] == 0
    assert 1 < waits[1] <= 2.0, "30 a minute: the second waits its two seconds"


def test_output_is_reserved_at_max_tokens_and_the_unused_part_given_back():
    assert ratelimit.acquire(MODEL, input_tokens=100, max_tokens=900) == 0
    assert ratelimit.acquire(MODEL, input_tokens=100, max_tokens=200) > 0, "900 of 1000 held"

    ratelimit.settle(
        MODEL, estimated_input=100, actual_input=100, max_tokens=900, actual_output=100
    )

    assert ratelimit.acquire(MODEL, input_tokens=100, max_tokens=200) == 0
    assert ratelimit.acquire(MODEL, input_tokens=100, max_tokens=800) > 0, "100 + 200 still held"


def test_input_tokens_over_the_estimate_are_not_given_back_and_under_are():
    assert ratelimit.acquire(MODEL, input_tokens=9000, max_tokens=1) == 0
    assert ratelimit.acquire(MODEL, input_tokens=2000, max_tokens=1) > 0

    ratelimit.settle(MODEL, estimated_input=9000, actual_input=4000, max_tokens=1, actual_output=1)

    assert ratelimit.acquire(MODEL, input_tokens=2000, max_tokens=1) == 0


def test_a_provider_429_pauses_the_model_for_every_worker_and_only_that_model():
    ratelimit.pause(MODEL, 30)
    ratelimit.limiter_for.cache_clear()  # another worker process builds its own limiter

    assert 25 < ratelimit.acquire(MODEL, input_tokens=1, max_tokens=1) <= 30
    assert ratelimit.acquire(OTHER, input_tokens=1, max_tokens=1) == 0


def test_without_redis_nothing_is_sent_and_nothing_raises():
    live = shared.get_redis()
    shared._client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    shared._script.cache_clear()  # scripts are bound to the client that registered them
    try:
        wait = ratelimit.acquire(MODEL, input_tokens=1, max_tokens=1)
        ratelimit.settle(MODEL, estimated_input=1, actual_input=0, max_tokens=1, actual_output=0)
        ratelimit.pause(MODEL, 5)
    finally:
        shared._client = live
        ratelimit.limiter_for.cache_clear()
        shared._script.cache_clear()

    assert wait == ratelimit.UNAVAILABLE_DELAY
