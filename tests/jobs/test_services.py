"""Claims, finishes and retries as conditional UPDATEs, on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.errors import InvalidInput
from jobs.models import Job, Outcome, Status
from jobs.services import (
    CallReport,
    call_record,
    job_claim,
    job_fail,
    job_schedule_retry,
    job_submit,
    job_succeed,
)
from jobs.usage import Usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(user):
    return job_submit(owner=user, kind="summarize", input={"text": "Hello there. General."}).job


def test_claim_takes_a_queued_job_once(job):
    first = job_claim(job_id=job.id)
    second = job_claim(job_id=job.id)

    assert first is not None
    assert first.status == Status.RUNNING
    assert first.attempts == 1
    assert first.lease_expires_at > timezone.now()
    assert second is None


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELED])
def test_finished_jobs_cannot_be_claimed(job, status):
    Job.objects.filter(pk=job.id).update(status=status)
    assert job_claim(job_id=job.id) is None


def test_a_lapsed_lease_can_be_reclaimed_and_fences_the_old_holder(job):
    stale = job_claim(job_id=job.id)
    Job.objects.filter(pk=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    fresh = job_claim(job_id=job.id)

    assert fresh.attempts == 2
    assert job_succeed(job_id=job.id, attempt=stale.attempts, result={"summary": "late"}) is False
    assert job_succeed(job_id=job.id, attempt=fresh.attempts, result={"summary": "on time"}) is True
    assert Job.objects.get(pk=job.id).result == {"summary": "on time"}


def test_finishing_twice_writes_one_result(job):
    held = job_claim(job_id=job.id)

    assert job_succeed(job_id=job.id, attempt=held.attempts, result={"n": 1}) is True
    assert job_fail(job_id=job.id, attempt=held.attempts, code="x", message="y") is False
    assert Job.objects.get(pk=job.id).status == Status.SUCCEEDED


def test_a_retrying_job_is_claimable_again(job):
    held = job_claim(job_id=job.id)
    assert job_schedule_retry(
        job_id=job.id, attempt=held.attempts, delay=5, code="rate_limited", message="429"
    )

    waiting = Job.objects.get(pk=job.id)
    assert waiting.status == Status.RETRYING
    assert waiting.next_retry_at > timezone.now()
    assert waiting.error_code == "rate_limited"
    again = job_claim(job_id=job.id)
    assert again.attempts == 2
    assert again.next_retry_at is None


def test_recording_a_call_adds_its_usage_to_the_job_once(job):
    usage = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=50,
    )
    call_record(
        job_id=job.id,
        report=CallReport(attempt=1, seq=0, model=job.model, outcome=Outcome.OK, usage=usage),
    )

    job.refresh_from_db()
    assert (job.input_tokens, job.output_tokens) == (1000, 200)
    assert (job.cache_creation_input_tokens, job.cache_read_input_tokens) == (300, 50)
    # haiku: 1000 x $1 + 200 x $5 + 300 x $1.25 + 50 x $0.10, per million tokens.
    assert str(job.cost_usd) == "0.002380"


def test_the_same_call_slot_cannot_be_recorded_twice(job):
    from django.db import IntegrityError

    report = CallReport(
        attempt=1, seq=0, model=job.model, outcome=Outcome.OK, usage=Usage(input_tokens=5)
    )
    call_record(job_id=job.id, report=report)
    with pytest.raises(IntegrityError):
        call_record(job_id=job.id, report=report)
    job.refresh_from_db()
    assert job.input_tokens == 5


def test_invalid_input_raises_before_anything_is_stored(user):
    with pytest.raises(InvalidInput) as error:
        job_submit(owner=user, kind="summarize", input={"text": ""})
    assert error.value.details[0]["loc"][:2] == ["input", "text"]
    assert Job.objects.count() == 0
