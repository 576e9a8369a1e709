from __future__ import annotations

import pytest

from workers.backoff import retry_delay


@pytest.fixture(autouse=True)
def _delays(settings):
    settings.AIJOBS_RETRY_BASE_DELAY = 1.0
    settings.AIJOBS_RETRY_MAX_DELAY = 30.0


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]
)
def test_delay_is_jittered_below_an_exponential_ceiling(attempt, ceiling):
    delays = [retry_delay(attempt) for _ in range(200)]
    assert all(0 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 100, "full jitter spreads retries"


def test_retry_after_is_a_floor():
    assert all(retry_delay(1, retry_after=7.0) >= 7.0 for _ in range(50))


def test_the_cap_wins_over_a_huge_retry_after():
    assert retry_delay(1, retry_after=3600) == 30.0
