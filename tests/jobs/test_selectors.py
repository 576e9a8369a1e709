"""The hand-written status read answers exactly what the ORM would, and only to the owner."""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.forms.models import model_to_dict

from jobs.attempts import job_claim
from jobs.models import Job
from jobs.selectors import job_get
from jobs.submission import job_submit
from tests.helpers import succeed

pytestmark = pytest.mark.django_db


def test_the_status_read_matches_the_orm_field_for_field(user):
    job = job_submit(owner=user, kind="classify", input={"text": "Hi.", "labels": ["a", "b"]}).job
    held = job_claim(job_id=job.id).job
    succeed(held, {"label": "a", "nested": {"list": [1, 2.5, None]}}, attempt=held.attempts)

    read = job_get(owner=user, job_id=job.id)

    stored = Job.objects.get(pk=job.id)
    assert model_to_dict(read) == model_to_dict(stored)
    assert read.result == {"label": "a", "nested": {"list": [1, 2.5, None]}}
    assert (read.id, read.created_at, read.finished_at) == (
        stored.id,
        stored.created_at,
        stored.finished_at,
    )


def test_the_status_read_finds_nothing_for_another_user_or_id(user, other_user):
    job = job_submit(owner=user, kind="summarize", input={"text": "Hello."}).job

    assert job_get(owner=other_user, job_id=job.id) is None
    assert job_get(owner=user, job_id=uuid4()) is None
