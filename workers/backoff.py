"""How long a job waits before its next attempt."""

from __future__ import annotations

import random

from django.conf import settings


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider asked, capped.

    Full jitter (a uniform draw below the exponential ceiling) spreads a burst
    of jobs that failed together, so they do not come back together.
    """
    base = settings.AIJOBS_RETRY_BASE_DELAY
    cap = settings.AIJOBS_RETRY_MAX_DELAY
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
