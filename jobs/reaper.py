"""Reconciliation, run by beat: nothing accepted is lost, nothing stays half-done.

Every rule re-publishes a job's message; claims are conditional, so a job
whose first message is still alive runs once however often it is sent. A batch
item is the dispatcher's until its first publish (jobs/dispatch.py), and the
reaper's like any job's after it: a message or a worker lost then is recovered here.
Rows are taken with SKIP LOCKED, so two reapers never publish the same job twice
in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import limits
from jobs.models import UNFINISHED, Job, Outcome, ProviderCall, Status
from jobs.submission import job_enqueue

log = logging.getLogger(__name__)

BATCH = 500
# A queued job's message is published right after its commit; give that a moment.
PUBLISH_GRACE = timedelta(seconds=10)
# A countdown message is late by this much before it counts as lost.
RETRY_GRACE = timedelta(seconds=30)


def _needs_message(now: datetime) -> Q:
    requeue_after = timedelta(seconds=settings.AIJOBS_REQUEUE_AFTER)
    # Its publish failed: at submission, or here (then the job may be running on a lapsed
    # lease, or retrying). An unpublished batch item is the dispatcher's to send, in turn.
    never_published = Q(
        status__in=UNFINISHED,
        enqueued_at__isnull=True,
        created_at__lt=now - PUBLISH_GRACE,
        batch__isnull=True,
    )
    # Published long ago and still queued: the broker may have lost it (a
    # Redis restart without persistence, FLUSHALL).
    maybe_lost = Q(status=Status.QUEUED, enqueued_at__lt=now - requeue_after)
    retry_overdue = Q(
        status=Status.RETRYING,
        next_retry_at__lt=now - RETRY_GRACE,
        enqueued_at__lt=F("next_retry_at"),
    )
    # Its worker died: publish once after the lease lapsed, and the next claim takes over.
    lease_lapsed = Q(
        status=Status.RUNNING, lease_expires_at__lt=now, enqueued_at__lt=F("lease_expires_at")
    )
    return never_published | maybe_lost | retry_overdue | lease_lapsed


def jobs_reap() -> dict[str, int]:
    """Re-publish jobs that lost their message or their worker; settle calls that never ended."""
    now = timezone.now()
    with transaction.atomic():
        stuck = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(_needs_message(now))
            .values_list("id", "batch_id")[:BATCH]
        )
        Job.objects.filter(pk__in=[job_id for job_id, _ in stuck]).update(enqueued_at=now)
    published = sum(
        job_enqueue(job_id=job_id, in_batch=batch_id is not None) for job_id, batch_id in stuck
    )
    unknown = calls_mark_unknown(now=now)
    if stuck or unknown:
        log.info(
            "reaper: re-published %d of %d jobs, %d calls marked unknown",
            published,
            len(stuck),
            unknown,
        )
    return {"republished": published, "found": len(stuck), "calls_unknown": unknown}


def calls_mark_unknown(*, now: datetime) -> int:
    """Pending calls older than a lease cannot still be running: their worker died mid-call.

    The provider may have billed them, so their reservation is counted as spent.
    """
    cutoff = now - timedelta(seconds=settings.AIJOBS_LEASE_SECONDS)
    marked = 0
    with transaction.atomic():
        pending = ProviderCall.objects.select_for_update(skip_locked=True).filter(
            outcome=Outcome.PENDING, created_at__lt=cutoff
        )[:BATCH]
        for call in pending:
            call.outcome = Outcome.UNKNOWN
            call.error_code = "worker_lost"
            call.error_message = "the worker stopped before the call's answer was recorded"
            call.save(update_fields=["outcome", "error_code", "error_message"])
            if call.budget_ledger_id:
                reserved = call.reserved_usd
                limits.budget_settle(
                    ledger_id=call.budget_ledger_id, reserved=reserved, cost=reserved
                )
            marked += 1
    return marked


def records_cleanup() -> dict[str, int]:
    """Free idempotency keys past their window and delete old task results, in small batches.

    Small batches keep each statement short on big tables, where one large
    DELETE would hold locks and memory for minutes.
    """
    now = timezone.now()
    window = now - timedelta(hours=settings.AIJOBS_IDEMPOTENCY_WINDOW_HOURS)
    results_cutoff = now - timedelta(days=settings.AIJOBS_RESULTS_TTL_DAYS)
    keys = _in_batches(
        lambda: Job.objects.filter(idempotency_key__isnull=False, created_at__lt=window),
        lambda ids: Job.objects.filter(pk__in=ids).update(idempotency_key=None),
    )
    results = _in_batches(
        lambda: TaskResult.objects.filter(date_done__lt=results_cutoff),
        lambda ids: TaskResult.objects.filter(pk__in=ids).delete()[0],
    )
    return {"idempotency_keys_freed": keys, "task_results_deleted": results}


def _in_batches(select: Callable[[], QuerySet[Any]], apply: Callable[[list[Any]], int]) -> int:
    done = 0
    while ids := list(select().values_list("pk", flat=True)[:BATCH]):
        done += apply(ids)
        if len(ids) < BATCH:
            break
    return done
