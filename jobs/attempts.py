"""A job from the worker's side: claimed for an attempt, its calls recorded, then
succeeded, failed, sent back for a retry or released.

Claims and finishes are conditional UPDATEs whose row count decides who owns
the work, so duplicate deliveries and stale workers cannot apply effects twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import limits, rows
from jobs.models import Job, Outcome, ProviderCall, Status
from jobs.usage import Usage

# Error messages are stored cut to this many characters: enough to read, not a whole body.
MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True)
class CallReport:
    """What one provider call cost and how it ended, as the worker saw it."""

    outcome: Outcome
    usage: Usage = field(default_factory=Usage)
    provider_request_id: str = ""
    stop_reason: str = ""
    latency_ms: int = 0
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""

    def columns(self) -> dict[str, Any]:
        """The call's columns that say how it ended (its usage aside)."""
        columns = {name: getattr(self, name) for name in rows.CALL_REPORT_COLUMNS}
        return {**columns, "error_message": self.error_message[:MAX_ERROR_MESSAGE]}


@dataclass(frozen=True)
class Claim:
    """The job held for one attempt, or none: `busy` when its owner is at their running
    limit, `missing` when there is no such row."""

    job: Job | None
    busy: bool = False
    missing: bool = False


def _claimable(job: Job, now: datetime) -> bool:
    if job.status in (Status.QUEUED, Status.RETRYING):
        return True
    return (
        job.status == Status.RUNNING
        and job.lease_expires_at is not None
        and job.lease_expires_at < now
    )


def job_claim(*, job_id: UUID | str) -> Claim:
    """Take the job for one attempt: a conditional UPDATE whose row count decides.

    A claim that takes over a lapsed lease (its worker died) counts it in
    `lost_leases`. The attempt number it sets fences off the old holder.
    """
    job = _claim(job_id, unlimited_owners_only=True)
    if job is not None:
        return Claim(job=job)
    # Not claimable, missing, or its owner has a running limit: look before deciding.
    seen = Job.objects.filter(pk=job_id).first()
    if seen is None:
        return Claim(job=None, missing=True)
    if not _claimable(seen, timezone.now()):
        return Claim(job=None)
    limit = limits.limits_for(seen.owner_id).max_running
    if not limit:
        return Claim(job=_claim(job_id))
    with transaction.atomic():
        if _running_count(seen.owner_id) >= limit:
            return Claim(job=None, busy=True)
        return Claim(job=_claim(job_id))


def _claim(job_id: UUID | str, *, unlimited_owners_only: bool = False) -> Job | None:
    now = timezone.now()
    return rows.job_claim(
        job_id=job_id,
        now=now,
        lease_expires_at=now + timedelta(seconds=settings.AIJOBS_LEASE_SECONDS),
        owner_unlimited_only=unlimited_owners_only,
        default_max_running=settings.AIJOBS_MAX_RUNNING_PER_USER,
    )


def _running_count(owner_id: int) -> int:
    """The owner's running jobs, under a per-owner lock held to the end of the transaction,
    so two claims cannot both see room for one more."""
    rows.advisory_lock(f"running:{owner_id}")
    return Job.objects.filter(
        owner_id=owner_id, status=Status.RUNNING, lease_expires_at__gt=timezone.now()
    ).count()


def call_begin(
    *, job: Job, seq: int, reserve_usd: Decimal, celery_task_id: str = ""
) -> ProviderCall:
    """Record a call as pending before it is sent, holding its worst-case cost against the budget.

    Raises BudgetExceeded (and records nothing) when the reservation does not fit.
    """
    pending = {
        "job_id": job.id,
        "attempt": job.attempts,
        "seq": seq,
        "model": job.model,
        "outcome": Outcome.PENDING,
        "celery_task_id": celery_task_id,
    }
    if limits.limits_for(job.owner_id).budget_usd is None:
        return ProviderCall.objects.create(**pending)  # one statement, no transaction needed
    with transaction.atomic():
        ledger = limits.budget_reserve(user_id=job.owner_id, amount=reserve_usd)
        return ProviderCall.objects.create(
            **pending, reserved_usd=reserve_usd, budget_ledger=ledger
        )


def call_finish(
    *, call: ProviderCall, report: CallReport, result: dict[str, Any] | None = None
) -> bool:
    """Record how a pending call ended and add its usage to the job and the budget, once.

    With `result`, the job succeeds in the same statement: an accepted answer
    is never recorded without its result, so a worker dying in between cannot
    make the next attempt pay for the answer again. False when the call was
    already settled (the reaper took it from a worker that stalled past its lease).
    """
    cost = report.usage.cost_usd(call.model)
    if not call.budget_ledger_id:
        return _settle(call, report, cost, result)
    with transaction.atomic():
        settled = _settle(call, report, cost, result)
        if settled:
            limits.budget_settle(
                ledger_id=call.budget_ledger_id, reserved=call.reserved_usd, cost=cost
            )
        return settled


def _settle(
    call: ProviderCall, report: CallReport, cost: Decimal, result: dict[str, Any] | None
) -> bool:
    return rows.call_settle(
        call_id=call.pk,
        attempt=call.attempt,
        report={**report.columns(), **report.usage.as_fields()},
        cost_usd=cost,
        result=result,
        finished_at=timezone.now(),
    )


def _update_held(job_id: UUID, attempt: int, **changes: Any) -> bool:
    """Apply changes only while the caller still holds the job's current lease."""
    held = Job.objects.filter(pk=job_id, status=Status.RUNNING, attempts=attempt)
    return held.update(lease_expires_at=None, **changes) == 1


def job_fail(*, job_id: UUID, attempt: int, code: str, message: str) -> bool:
    return _update_held(
        job_id,
        attempt,
        status=Status.FAILED,
        error_code=code,
        error_message=message[:MAX_ERROR_MESSAGE],
        finished_at=timezone.now(),
    )


def job_schedule_retry(
    *, job_id: UUID, attempt: int, delay: float, code: str, message: str
) -> bool:
    """Mark the job waiting for its next attempt; the caller sends the delayed message."""
    now = timezone.now()
    return _update_held(
        job_id,
        attempt,
        status=Status.RETRYING,
        error_code=code,
        error_message=message[:MAX_ERROR_MESSAGE],
        next_retry_at=now + timedelta(seconds=delay),
        enqueued_at=now,
    )


def job_release(*, job_id: UUID, attempt: int) -> bool:
    """Give the job back without using up an attempt (it waited for a rate limit, nothing was sent).

    Safe for fencing: the attempt number only ever repeats after a release,
    and the releasing worker does nothing more with the job.
    """
    return _update_held(
        job_id, attempt, status=Status.QUEUED, attempts=attempt - 1, enqueued_at=timezone.now()
    )
