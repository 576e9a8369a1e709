"""Claims, finishes, retries and calls as conditional UPDATEs, on the real database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import partial

import pytest
from django.db import IntegrityError
from django.utils import timezone

from jobs.attempts import (
    CallReport,
    ClaimOutcome,
    call_begin,
    call_finish,
    job_claim,
    job_fail,
    job_release,
    job_schedule_retry,
)
from jobs.errors import BudgetExceeded
from jobs.models import BudgetLedger, Job, Outcome, ProviderCall, Status, UserLimits
from jobs.submission import job_cancel, job_submit
from jobs.usage import Usage
from tests.helpers import at_once, record_call, succeed

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(user):
    return job_submit(owner=user, kind="summarize", input={"text": "Hello there. General."}).job


def submit(user, n: int = 1) -> list[Job]:
    return [
        job_submit(owner=user, kind="summarize", input={"text": f"Text {i}."}).job for i in range(n)
    ]


def test_claim_takes_a_queued_job_once(job):
    first = job_claim(job_id=job.id).job
    second = job_claim(job_id=job.id)

    assert first.status == Status.RUNNING
    assert first.attempts == 1
    assert first.lease_expires_at > timezone.now()
    assert Job.objects.get(pk=job.id).attempts == 1
    assert (second.outcome, second.job) == (ClaimOutcome.HELD, None)


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELED])
def test_finished_jobs_cannot_be_claimed(job, status):
    Job.objects.filter(pk=job.id).update(status=status)

    claim = job_claim(job_id=job.id)

    assert (claim.outcome, claim.job) == (ClaimOutcome.FINISHED, None)


def test_a_missing_job_is_said_to_be_missing(job):
    Job.objects.filter(pk=job.id).delete()
    assert job_claim(job_id=job.id).outcome is ClaimOutcome.MISSING


def test_a_lapsed_lease_can_be_reclaimed_and_fences_the_old_holder(job):
    stale = job_claim(job_id=job.id).job
    Job.objects.filter(pk=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    fresh = job_claim(job_id=job.id).job

    assert fresh.attempts == 2
    assert fresh.lost_leases == 1
    late = Job.objects.get(pk=job.id)
    assert succeed(late, {"summary": "late"}, attempt=stale.attempts) is False
    assert succeed(late, {"summary": "on time"}, attempt=fresh.attempts) is True
    assert Job.objects.get(pk=job.id).result == {"summary": "on time"}


def test_finishing_twice_writes_one_result(job):
    held = job_claim(job_id=job.id).job

    assert succeed(held, {"n": 1}, attempt=held.attempts) is True
    assert job_fail(job_id=job.id, attempt=held.attempts, code="x", message="y") is False
    assert Job.objects.get(pk=job.id).status == Status.SUCCEEDED


def test_a_retrying_job_is_claimable_again(job):
    held = job_claim(job_id=job.id).job
    assert job_schedule_retry(
        job_id=job.id, attempt=held.attempts, delay=5, code="rate_limited", message="429"
    )

    waiting = Job.objects.get(pk=job.id)
    assert waiting.status == Status.RETRYING
    assert waiting.next_retry_at > timezone.now()
    assert waiting.error_code == "rate_limited"
    again = job_claim(job_id=job.id).job
    assert again.attempts == 2
    assert again.next_retry_at is None
    assert again.lost_leases == 0, "a retry is not a lost worker"


def test_a_released_job_does_not_use_up_an_attempt(job):
    held = job_claim(job_id=job.id).job

    assert job_release(job_id=job.id, attempt=held.attempts)

    released = Job.objects.get(pk=job.id)
    assert (released.status, released.attempts) == (Status.QUEUED, 0)
    assert job_claim(job_id=job.id).job.attempts == 1


def test_a_user_at_the_running_limit_waits_and_others_do_not(user, other_user):
    UserLimits.objects.create(user=user, max_running=2)
    mine = submit(user, 3)
    theirs = submit(other_user, 1)

    claims = [job_claim(job_id=job.id) for job in mine]

    assert [claim.job is not None for claim in claims] == [True, True, False]
    assert claims[2].outcome is ClaimOutcome.OWNER_BUSY
    assert job_claim(job_id=theirs[0].id).job is not None
    succeed(mine[0], {}, attempt=1)
    assert job_claim(job_id=mine[2].id).job is not None


def test_the_default_running_limit_applies_to_users_without_their_own(user, settings):
    settings.AIJOBS_MAX_RUNNING_PER_USER = 1
    first, second = submit(user, 2)

    assert job_claim(job_id=first.id).job is not None
    assert job_claim(job_id=second.id).outcome is ClaimOutcome.OWNER_BUSY


def test_a_running_limit_of_zero_lifts_the_default(user, settings):
    settings.AIJOBS_MAX_RUNNING_PER_USER = 1
    UserLimits.objects.create(user=user, max_running=0)
    jobs = submit(user, 2)

    assert all(job_claim(job_id=job.id).job is not None for job in jobs)


def test_a_claimed_job_comes_back_as_stored(job):
    claimed = job_claim(job_id=job.id).job

    stored = Job.objects.get(pk=job.id)
    assert claimed.input == stored.input
    assert claimed.input["text"] == "Hello there. General."
    assert (claimed.status, claimed.attempts) == (Status.RUNNING, 1)
    assert claimed.lease_expires_at == stored.lease_expires_at > timezone.now()
    assert claimed.started_at == stored.started_at
    assert claimed.owner_id == stored.owner_id


def test_recording_a_call_adds_its_usage_to_the_job_once(job):
    usage = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=50,
    )
    call = record_call(job, attempt=1, usage=usage)

    assert call_finish(call=call, report=CallReport(outcome=Outcome.OK, usage=usage)) is False
    job.refresh_from_db()
    assert (job.input_tokens, job.output_tokens) == (1000, 200)
    assert (job.cache_creation_input_tokens, job.cache_read_input_tokens) == (300, 50)
    # haiku: 1000 x $1 + 200 x $5 + 300 x $1.25 + 50 x $0.10, per million tokens.
    assert str(job.cost_usd) == "0.002380"


def test_a_sonnet_call_costs_the_sonnet_row_of_the_price_table(user):
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    extract = job_submit(owner=user, kind="extract", input={"text": "Ann.", "schema": schema}).job
    assert extract.model == "claude-sonnet-4-6"
    usage = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=50,
    )

    record_call(extract, attempt=1, usage=usage)

    extract.refresh_from_db()
    # sonnet: 1000 x $3 + 200 x $15 + 300 x $3.75 + 50 x $0.30, per million tokens.
    assert str(extract.cost_usd) == "0.007140"


def test_an_answer_after_a_cancel_counts_its_usage_but_leaves_the_job_canceled(job):
    held = job_claim(job_id=job.id).job
    call = call_begin(job=held, seq=0, reserve_usd=Decimal(0))
    job_cancel(job=held)

    report = CallReport(outcome=Outcome.OK, usage=Usage(input_tokens=400, output_tokens=20))
    assert call_finish(call=call, report=report, result={"summary": "too late"}) is True
    assert call_finish(call=call, report=report, result={"summary": "too late"}) is False

    job.refresh_from_db()
    assert (job.status, job.result) == (Status.CANCELED, None)
    assert (job.input_tokens, job.output_tokens) == (400, 20)
    call.refresh_from_db()
    assert (call.outcome, call.input_tokens, call.cost_usd) == (Outcome.OK, 400, job.cost_usd)


def test_an_accepted_answer_ends_the_lease_with_the_result(job):
    held = job_claim(job_id=job.id).job
    call = call_begin(job=held, seq=0, reserve_usd=Decimal(0))

    report = CallReport(outcome=Outcome.OK, usage=Usage(input_tokens=7), latency_ms=12)
    assert call_finish(call=call, report=report, result={"summary": "Done."})

    job.refresh_from_db()
    assert (job.status, job.result, job.input_tokens) == (Status.SUCCEEDED, {"summary": "Done."}, 7)
    assert job.lease_expires_at is None
    assert job.finished_at is not None
    assert (job.error_code, job.error_message) == ("", "")


def test_the_same_call_slot_cannot_be_begun_twice(job):
    job.attempts = 1
    call_begin(job=job, seq=0, reserve_usd=Decimal(0))
    with pytest.raises(IntegrityError):
        call_begin(job=job, seq=0, reserve_usd=Decimal(0))


def test_a_budget_reservation_that_does_not_fit_is_refused(user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("1.00"))
    first, second = submit(user, 2)
    first.attempts = second.attempts = 1

    held = call_begin(job=first, seq=0, reserve_usd=Decimal("0.70"))
    with pytest.raises(BudgetExceeded):
        call_begin(job=second, seq=0, reserve_usd=Decimal("0.70"))
    assert not ProviderCall.objects.filter(job=second).exists()

    call_finish(call=held, report=CallReport(outcome=Outcome.OK, usage=Usage(input_tokens=100_000)))
    ledger = held.budget_ledger
    ledger.refresh_from_db()
    assert (ledger.spent_usd, ledger.reserved_usd) == (Decimal("0.1"), Decimal(0))
    assert call_begin(job=second, seq=0, reserve_usd=Decimal("0.70"))


# Races are won or lost by timing: a few rounds make a lost one all but certain to show.
ROUNDS = 5


@pytest.mark.django_db(transaction=True)
def test_reservations_made_at_once_never_pass_the_budget(user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("1.00"))
    for _ in range(ROUNDS):
        jobs = submit(user, 12)
        for job in jobs:
            job.attempts = 1

        outcomes = at_once(
            [partial(call_begin, job=job, seq=0, reserve_usd=Decimal("0.30")) for job in jobs]
        )

        held = [outcome for outcome in outcomes if isinstance(outcome, ProviderCall)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, BudgetExceeded)]
        assert (len(held), len(refused)) == (3, 9), outcomes
        (ledger,) = BudgetLedger.objects.filter(user=user)
        assert ledger.reserved_usd == Decimal("0.90")
        ledger.delete()


@pytest.mark.django_db(transaction=True)
def test_claims_made_at_once_never_pass_the_running_limit(user):
    UserLimits.objects.create(user=user, max_running=2)
    for _ in range(ROUNDS):
        jobs = submit(user, 12)

        claims = at_once([partial(job_claim, job_id=job.id) for job in jobs])

        assert not [claim for claim in claims if isinstance(claim, Exception)], claims
        outcomes = [claim.outcome for claim in claims]
        assert outcomes.count(ClaimOutcome.CLAIMED) == 2, outcomes
        assert outcomes.count(ClaimOutcome.OWNER_BUSY) == 10, outcomes
        running = Job.objects.filter(owner=user, status=Status.RUNNING)
        assert running.count() == 2
        running.update(status=Status.SUCCEEDED)
