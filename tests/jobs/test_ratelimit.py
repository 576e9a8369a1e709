"""The GCRA limiter on the real Redis: bursts, several limits taken together or not at all,
refunds and pauses.

Limits here are a few units a minute, so a unit takes seconds to come back: the waits the
script computes stay far from their bounds however slow the machine is.
"""

from __future__ import annotations

import uuid

import pytest

from jobs.ratelimit import Limit, Limiter, get_redis

SLOW = Limit("requests", per_minute=6, burst=3)  # one unit every 10 s
TOKENS = Limit("tokens", per_minute=1000, burst=1000)  # 0.06 s a token


@pytest.fixture
def scope() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def test_a_burst_goes_at_once_and_the_next_waits_one_unit(scope):
    limiter = Limiter(scope, [SLOW])

    assert [limiter.acquire({"requests": 1}) for _ in range(SLOW.burst)] == [0.0] * SLOW.burst
    wait = limiter.acquire({"requests": 1})

    assert 5 < wait <= SLOW.seconds_per_unit


def test_a_refused_request_takes_nothing_from_any_limit(scope):
    one_request = Limit("requests", per_minute=6, burst=1)
    assert Limiter(scope, [one_request, TOKENS]).acquire({"requests": 1, "tokens": 500}) == 0

    refused = Limiter(scope, [one_request, TOKENS]).acquire({"requests": 1, "tokens": 400})

    assert refused > 0
    tokens_only = Limiter(scope, [TOKENS])
    assert tokens_only.acquire({"tokens": 500}) == 0, "the refused 400 tokens were not taken"
    assert tokens_only.acquire({"tokens": 1}) > 0


def test_tokens_a_minute_wait_for_exactly_the_missing_part(scope):
    limiter = Limiter(scope, [TOKENS])
    assert limiter.acquire({"tokens": 800}) == 0

    wait = limiter.acquire({"tokens": 300})

    # 100 tokens over the bucket, at 0.06 s each.
    assert 3 < wait <= 6.0


def test_one_request_larger_than_the_bucket_goes_once_the_bucket_is_full(scope):
    limiter = Limiter(scope, [TOKENS])

    assert limiter.acquire({"tokens": 1500}) == 0, "else it could never be sent"
    # The bucket is 500 tokens (30 s) in debt.
    assert limiter.acquire({"tokens": 1}) > 25


def test_a_refund_makes_room_at_once(scope):
    limiter = Limiter(scope, [TOKENS])
    limiter.acquire({"tokens": 1000})
    assert limiter.acquire({"tokens": 400}) > 0

    limiter.refund("tokens", 500)

    assert limiter.acquire({"tokens": 400}) == 0
    assert limiter.acquire({"tokens": 200}) > 0, "only what was refunded came back"


def test_a_pause_blocks_every_limit_and_a_shorter_one_does_not_shorten_it(scope):
    limiter = Limiter(scope, [TOKENS])
    limiter.pause(30)
    limiter.pause(1)

    wait = limiter.acquire({"tokens": 1})

    assert 25 < wait <= 30
    assert not get_redis().exists(limiter._key("tokens")), "nothing was taken while paused"
    assert Limiter(f"{scope}:other", [TOKENS]).acquire({"tokens": 1}) == 0
