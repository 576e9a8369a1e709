"""Shared fixtures: users and API tokens on the real PostgreSQL test database."""

from __future__ import annotations

import os
import uuid

import pytest

# Each test session gets its own queue, so a stale message from an earlier
# run (or another checkout on the same Redis) never reaches this run's workers.
os.environ.setdefault("AIJOBS_QUEUE", f"aijobs-test-{uuid.uuid4().hex[:8]}")


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
