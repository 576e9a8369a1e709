"""The provider's rate limits, enforced for the whole fleet before each Claude call.

Anthropic limits requests, input tokens and output tokens per minute per
model; output tokens are counted at max_tokens when a request starts and
corrected when it ends, and we do the same. A 429 with retry-after pauses the
model for every worker, not just the one that saw it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import redis
from django.conf import settings

from jobs.ratelimit import Limit, Limiter

log = logging.getLogger(__name__)

REQUESTS, INPUT, OUTPUT = "requests", "input_tokens", "output_tokens"
# How long a job waits when the limiter's Redis does not answer.
UNAVAILABLE_DELAY = 5.0
# Requests may come in bursts of one second's worth; token buckets hold a
# minute's worth, as the provider's own buckets do.
REQUEST_BURST_SECONDS = 1


def _limits_for(model: str) -> list[Limit]:
    table = settings.AIJOBS_PROVIDER_LIMITS
    config = table.get(model) or table.get("*") or {}
    limits = []
    if config.get("rpm"):
        rpm = int(config["rpm"])
        limits.append(Limit(REQUESTS, rpm, burst=max(1, rpm * REQUEST_BURST_SECONDS // 60)))
    for name, key in ((INPUT, "input_tpm"), (OUTPUT, "output_tpm")):
        if config.get(key):
            limits.append(Limit(name, int(config[key]), burst=int(config[key])))
    return limits


@functools.cache
def limiter_for(model: str) -> Limiter:
    """The model's limiter; with no limits configured it still honours pauses."""
    return Limiter(f"provider:{model}", _limits_for(model))


def acquire(model: str, *, input_tokens: int, max_tokens: int) -> float:
    """Take one request's quota and return 0, or the seconds until it would fit.

    Without Redis the limits cannot be shared, so nothing is sent: the job
    waits as if rate limited (it is the broker's Redis too, usually).
    """
    try:
        return limiter_for(model).acquire({REQUESTS: 1, INPUT: input_tokens, OUTPUT: max_tokens})
    except redis.RedisError as exc:
        log.warning("rate limits unavailable (%s); job deferred", exc)
        return UNAVAILABLE_DELAY


def settle(
    model: str, *, estimated_input: int, actual_input: int, max_tokens: int, actual_output: int
) -> None:
    """Give back what the call took but did not use (best effort: the call is done)."""
    limiter = limiter_for(model)
    with _best_effort("refund"):
        limiter.refund(INPUT, estimated_input - actual_input)
        limiter.refund(OUTPUT, max_tokens - actual_output)


def pause(model: str, seconds: float) -> None:
    with _best_effort("pause"):
        limiter_for(model).pause(seconds)


@contextlib.contextmanager
def _best_effort(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        log.warning("rate limit %s skipped, Redis unavailable: %s", what, exc)
