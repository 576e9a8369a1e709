"""Health reports jobs that stopped moving, even while every worker answers pings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.attempts import job_claim
from jobs.health import jobs_stalled
from jobs.models import Job
from jobs.submission import job_submit

pytestmark = pytest.mark.django_db


def submit(user) -> Job:
    return job_submit(owner=user, kind="summarize", input={"text": "Waiting. Still waiting."}).job


def test_jobs_waiting_long_with_no_claim_are_stalled(user, settings):
    settings.AIJOBS_STALL_SECONDS = 60
    old = submit(user)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert jobs_stalled()

    job_claim(job_id=submit(user).id)

    assert not jobs_stalled(), "a recent claim shows workers are consuming"


def test_a_fresh_queue_is_not_stalled(user):
    submit(user)
    assert not jobs_stalled()
