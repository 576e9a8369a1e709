"""A job from the worker's side: claimed for an attempt, its calls recorded, then
succeeded, failed, sent back for a retry or released.

Claims and finishes are conditional UPDATEs whose row count decides who owns
the work, so duplicate deliveries and stale workers cannot apply effects twice.
Each change of a job's status is published as its event once it has committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import limits, rows, webhooks
from jobs.events import job_status_publish, job_topics
from jobs.models import FINISHED, Job, Outcome, ProviderCall, Status, WebhookEvent
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


class ClaimOutcome(Enum):
    """How a claim ended; only CLAIMED comes with the job."""

    CLAIMED = "claimed"
    # No such row: a deleted job (messages are sent only after the row's commit).
    MISSING = "missing"
    # Succeeded, failed or canceled.
    FINISHED = "finished"
    # Another attempt holds a live lease on it, or took it between our look and our claim.
    HELD = "held"
    # Its owner is at their running limit: the job waits its turn.
    OWNER_BUSY = "owner_busy"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    job: Job | None = None


def job_claim(*, job_id: UUID | str) -> Claim:
    """Take the job for one attempt: a conditional UPDATE whose row count decides.

    A claim that takes over a lapsed lease (its worker died) counts it in
    `lost_leases`. The attempt number it sets fences off the old holder.
    """
    claim = _job_claim(job_id)
    job = claim.job
    if job is not None:
        topics = job_topics(owner_id=job.owner_id, batch_id=job.batch_id)
        job_status_publish(job.id, Status.RUNNING, topics=topics)
    return claim


def _job_claim(job_id: UUID | str) -> Claim:
    now = timezone.now()
    job = _claim(job_id, now, owner_unlimited_only=True)
    if job is not None:
        return Claim(ClaimOutcome.CLAIMED, job)
    # Not claimable, missing, or its owner has a running limit: look before deciding.
    state = rows.job_state(job_id=job_id, now=now)
    if state is None:
        return Claim(ClaimOutcome.MISSING)
    if not state.claimable:
        finished = state.status in FINISHED
        return Claim(ClaimOutcome.FINISHED if finished else ClaimOutcome.HELD)
    limit = limits.limits_for(state.owner_id).max_running
    if not limit:
        return _taken(_claim(job_id, timezone.now()))
    with transaction.atomic():
        if _running_count(state.owner_id) >= limit:
            return Claim(ClaimOutcome.OWNER_BUSY)
        return _taken(_claim(job_id, timezone.now()))


def _claim(job_id: UUID | str, now: datetime, *, owner_unlimited_only: bool = False) -> Job | None:
    """The claim, and its job.started message (first claim only) handed over at commit."""
    claimed = rows.job_claim(
        job_id=job_id,
        now=now,
        lease_expires_at=now + timedelta(seconds=settings.AIJOBS_LEASE_SECONDS),
        owner_unlimited_only=owner_unlimited_only,
        default_max_running=settings.AIJOBS_MAX_RUNNING_PER_USER,
        message_id=webhooks.message_id(job_id, WebhookEvent.JOB_STARTED),
        retry_until=webhooks.retry_until(now),
    )
    if claimed is None:
        return None
    webhooks.messages_hand_over(claimed.message_ids)
    return claimed.job


def _taken(job: Job | None) -> Claim:
    """A claim after the look; None means another worker (or a cancel) got there first."""
    return Claim(ClaimOutcome.CLAIMED, job) if job is not None else Claim(ClaimOutcome.HELD)


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
        succeeded = _settle(call, report, cost, result)
    else:
        with transaction.atomic():
            succeeded = _settle(call, report, cost, result)
            if succeeded is not None:
                limits.budget_settle(
                    ledger_id=call.budget_ledger_id, reserved=call.reserved_usd, cost=cost
                )
    if succeeded:
        job_status_publish(call.job_id, Status.SUCCEEDED)
    return succeeded is not None


def _settle(
    call: ProviderCall, report: CallReport, cost: Decimal, result: dict[str, Any] | None
) -> bool | None:
    """The settle, and the job.completed message of a success handed over at commit."""
    now = timezone.now()
    settled = rows.call_settle(
        call_id=call.pk,
        attempt=call.attempt,
        report={**report.columns(), **report.usage.as_fields()},
        cost_usd=cost,
        result=result,
        finished_at=now,
        message_id=webhooks.message_id(call.job_id, WebhookEvent.JOB_COMPLETED),
        retry_until=webhooks.retry_until(now),
    )
    if settled is None:
        return None
    webhooks.messages_hand_over(settled.message_ids)
    return settled.succeeded


def _update_held(job_id: UUID, attempt: int, **changes: Any) -> bool:
    """Apply changes (a new status among them) only while the caller still holds the job's
    current lease."""
    held = Job.objects.filter(pk=job_id, status=Status.RUNNING, attempts=attempt)
    if held.update(lease_expires_at=None, **changes) == 0:
        return False
    job_status_publish(job_id, changes["status"])
    return True


def _error(code: str, message: str) -> dict[str, str]:
    return {"error_code": code, "error_message": message[:MAX_ERROR_MESSAGE]}


def job_fail(*, job_id: UUID, attempt: int, code: str, message: str) -> bool:
    """Fail the job while this attempt holds it; its job.completed message is added by the
    same statement and handed over at once."""
    now = timezone.now()
    error = _error(code, message)
    added = rows.job_fail(
        job_id=job_id,
        attempt=attempt,
        error_code=error["error_code"],
        error_message=error["error_message"],
        now=now,
        message_id=webhooks.message_id(job_id, WebhookEvent.JOB_COMPLETED),
        retry_until=webhooks.retry_until(now),
    )
    if added is None:
        return False
    webhooks.messages_hand_over(added)
    job_status_publish(job_id, Status.FAILED)
    return True


def job_schedule_retry(
    *, job_id: UUID, attempt: int, delay: float, code: str, message: str
) -> bool:
    """Mark the job waiting for its next attempt; the caller sends the delayed message."""
    now = timezone.now()
    return _update_held(
        job_id,
        attempt,
        status=Status.RETRYING,
        next_retry_at=now + timedelta(seconds=delay),
        enqueued_at=now,
        **_error(code, message),
    )


def job_release(*, job_id: UUID, attempt: int) -> bool:
    """Give the job back without using up an attempt (it waited for a rate limit, nothing was sent).

    Safe for fencing: the attempt number only ever repeats after a release,
    and the releasing worker does nothing more with the job.
    """
    return _update_held(
        job_id, attempt, status=Status.QUEUED, attempts=attempt - 1, enqueued_at=timezone.now()
    )
