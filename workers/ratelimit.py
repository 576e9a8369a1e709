"""The provider's rate limits, enforced for the whole fleet before each Claude call.

Anthropic limits requests, input tokens and output tokens per minute per
model; output tokens are counted at max_tokens when a request starts and
corrected when it ends, and we do the same. A 429 with retry-after pauses the
model for every worker, not just the one that saw it.
"""

from __future__ import annotations

import functools

from django.conf import settings

from jobs.ratelimit import Limit, Limiter

REQUESTS, INPUT, OUTPUT = "requests", "input_tokens", "output_tokens"
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
    """Take one request's quota and return 0, or the seconds until it would fit."""
    return limiter_for(model).acquire({REQUESTS: 1, INPUT: input_tokens, OUTPUT: max_tokens})


def settle(
    model: str, *, estimated_input: int, actual_input: int, max_tokens: int, actual_output: int
) -> None:
    """Give back what the call took but did not use."""
    limiter = limiter_for(model)
    limiter.refund(INPUT, estimated_input - actual_input)
    limiter.refund(OUTPUT, max_tokens - actual_output)


def pause(model: str, seconds: float) -> None:
    limiter_for(model).pause(seconds)
