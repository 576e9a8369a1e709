"""Shared fixtures: users and API tokens on the real PostgreSQL test database."""

from __future__ import annotations

import pytest

pytest_plugins = ("tests.fixtures",)


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
