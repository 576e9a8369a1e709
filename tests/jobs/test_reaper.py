"""The reaper's rules, against the real database (publishing is observed, not faked away)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import reaper
from jobs.attempts import call_begin, job_claim
from jobs.models import BudgetLedger, Job, Outcome, ProviderCall, Status, UserLimits
from jobs.submission import job_submit
from tests.helpers import batch_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    """The ids the reaper hands to the broker, a batch's item's as `id (batch)`."""
    sent: list[str] = []

    def enqueue(*, job_id: UUID, in_batch: bool) -> bool:
        sent.append(f"{job_id} (batch)" if in_batch else str(job_id))
        return True

    monkeypatch.setattr(reaper, "job_enqueue", enqueue)
    return sent


def submit(user) -> Job:
    return job_submit(owner=user, kind="summarize", input={"text": "Reap me. Please."}).job


def age(job: Job, **fields: object) -> None:
    Job.objects.filter(pk=job.pk).update(**fields)


def test_a_job_whose_publish_failed_is_published(user, published):
    job = submit(user)
    age(job, enqueued_at=None, created_at=timezone.now() - timedelta(minutes=1))

    assert reaper.jobs_reap()["republished"] == 1
    assert published == [str(job.id)]


def test_a_fresh_queued_job_is_left_to_its_message(user, published):
    submit(user)
    assert reaper.jobs_reap()["found"] == 0
    assert published == []


def test_a_long_queued_job_gets_a_new_message_once_per_interval(user, published, settings):
    job = submit(user)
    age(job, enqueued_at=timezone.now() - timedelta(seconds=settings.AIJOBS_REQUEUE_AFTER + 1))

    reaper.jobs_reap()
    reaper.jobs_reap()

    assert published == [str(job.id)]


def test_a_lapsed_lease_is_published_once_and_the_next_claim_takes_over(user, published):
    job = submit(user)
    job_claim(job_id=job.id)
    lapsed = timezone.now() - timedelta(seconds=1)
    age(job, lease_expires_at=lapsed, enqueued_at=lapsed - timedelta(minutes=1))

    reaper.jobs_reap()
    reaper.jobs_reap()

    assert published == [str(job.id)]
    assert job_claim(job_id=job.id).job.lost_leases == 1


def test_an_overdue_retry_is_published(user, published):
    job = submit(user)
    long_ago = timezone.now() - timedelta(minutes=5)
    age(
        job,
        status=Status.RETRYING,
        next_retry_at=long_ago,
        enqueued_at=long_ago - timedelta(seconds=5),
    )

    reaper.jobs_reap()

    assert published == [str(job.id)]


def test_a_running_job_whose_resend_failed_is_published_again(user, published):
    """The reaper's own publish can fail (the broker is down): it clears the mark, and the
    next pass must still find the job, whatever its status."""
    job = submit(user)
    job_claim(job_id=job.id)
    age(job, enqueued_at=None, created_at=timezone.now() - timedelta(minutes=1))

    reaper.jobs_reap()

    assert published == [str(job.id)]


def test_unpublished_batch_items_are_left_to_the_dispatcher(user, published):
    batch = batch_of(user, ["One. Item.", "Two. Item."])
    Job.objects.filter(batch=batch).update(created_at=timezone.now() - timedelta(hours=1))

    assert reaper.jobs_reap()["found"] == 0
    assert published == []


def test_a_batch_item_that_lost_its_message_after_dispatch_is_published(user, published, settings):
    batch = batch_of(user, ["One. Item.", "Two. Item."])
    lost = timezone.now() - timedelta(seconds=settings.AIJOBS_REQUEUE_AFTER + 1)
    Job.objects.filter(batch=batch, position=1).update(enqueued_at=lost)

    reaper.jobs_reap()

    assert published == [f"{Job.objects.get(batch=batch, position=1).id} (batch)"]


def test_calls_of_dead_workers_are_settled_as_unknown_at_their_worst_case(user, settings):
    UserLimits.objects.create(user=user, budget_usd=Decimal("5"))
    job = submit(user)
    job.attempts = 1
    call = call_begin(job=job, seq=0, reserve_usd=Decimal("0.25"))
    later = timezone.now() + timedelta(seconds=settings.AIJOBS_LEASE_SECONDS + 1)

    assert reaper.calls_mark_unknown(now=later) == 1

    call.refresh_from_db()
    assert call.outcome == Outcome.UNKNOWN
    ledger = BudgetLedger.objects.get(user=user)
    assert (ledger.spent_usd, ledger.reserved_usd) == (Decimal("0.25"), Decimal(0))
    assert reaper.calls_mark_unknown(now=later) == 0


def test_a_call_in_flight_is_not_touched(user):
    job = submit(user)
    job.attempts = 1
    call_begin(job=job, seq=0, reserve_usd=Decimal(0))

    assert reaper.calls_mark_unknown(now=timezone.now()) == 0
    assert ProviderCall.objects.get(job=job).outcome == Outcome.PENDING


def test_cleanup_frees_old_keys_and_deletes_old_task_results(user, settings, monkeypatch):
    monkeypatch.setattr(reaper, "BATCH", 2)
    old = [
        job_submit(
            owner=user, kind="summarize", input={"text": f"Old {i}."}, idempotency_key=f"k{i}"
        ).job
        for i in range(3)
    ]
    fresh = job_submit(
        owner=user, kind="summarize", input={"text": "New."}, idempotency_key="new"
    ).job
    Job.objects.filter(pk__in=[job.pk for job in old]).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    for n in range(3):
        TaskResult.objects.create(task_id=f"old-{n}", status="SUCCESS")
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    expired = timezone.now() - timedelta(days=settings.AIJOBS_RESULTS_TTL_DAYS + 1)
    TaskResult.objects.filter(task_id__startswith="old-").update(date_done=expired)

    assert reaper.records_cleanup() == {"idempotency_keys_freed": 3, "task_results_deleted": 3}

    assert list(Job.objects.filter(idempotency_key__isnull=False).values_list("pk", flat=True)) == [
        fresh.pk
    ]
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]
