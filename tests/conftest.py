"""Shared fixtures: users and API tokens on the real PostgreSQL test database."""

from __future__ import annotations

import random

import pytest

from tests.seeds import replay_hint, rng_for

pytest_plugins = ("tests.fixtures",)


def pytest_report_header() -> str:
    return replay_hint()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """A failure names the seed in its own report: CI runs without -s, and -q drops the header."""
    report = yield
    if report.failed:
        report.sections.append(("random seed", replay_hint()))
    return report


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """The test's random choices (which worker to kill, which faults), replayable from the seed."""
    return rng_for(request.node.nodeid)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Limits and tokens are cached per process; each test starts from the database."""
    from jobs import limits, tokens

    limits._cache.clear()
    tokens._cache.clear()


@pytest.fixture(autouse=True)
def _clean_rate_limits():
    """Rate limits and pauses one test leaves in Redis must not slow the next."""
    yield
    from django.conf import settings

    from jobs.ratelimit import get_redis

    client = get_redis()
    keys = list(client.scan_iter(match=f"{settings.AIJOBS_REDIS_PREFIX}:*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="correct-horse-battery")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(
        username="mallory", password="correct-horse-battery"
    )


@pytest.fixture
def token(user):
    from jobs.tokens import api_token_create

    return api_token_create(user=user, name="test")[1]


@pytest.fixture
def other_token(other_user):
    from jobs.tokens import api_token_create

    return api_token_create(user=other_user, name="test")[1]
