"""Celery tasks: an interface to the runner, nothing more."""

from __future__ import annotations

import math

from celery import Task, shared_task
from django.conf import settings

from jobs import dispatch, reaper, webhooks
from jobs.submission import RUN_BATCH_ITEMS_TASK, RUN_JOB_TASK
from workers import runner
from workers import webhooks as webhook_delivery


# The job row is the record of a job; Celery's result row would be a write per
# job that nothing reads. Failures are still stored (task_store_errors_even_if_ignored).
@shared_task(bind=True, name=RUN_JOB_TASK, max_retries=None, ignore_result=True)
def run_job(self: Task, job_id: str) -> None:
    """Run one attempt of the job; a retryable failure comes back as a Celery retry."""
    outcome = runner.run_job(job_id, task_id=self.request.id or "")
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)


# Without task events: Flower keeps the last 10,000 tasks it heard of, and a batch's thousands
# of items would push every job submitted on its own out of its list. The batch's page follows
# its items; Flower still shows the workers, busy and alive. An item may start up to
# ITEMS_SECONDS into the message, so the hard limit is one item's and that much more.
@shared_task(
    bind=True,
    name=RUN_BATCH_ITEMS_TASK,
    ignore_result=True,
    send_events=False,
    time_limit=settings.CELERY_TASK_TIME_LIMIT + math.ceil(runner.ITEMS_SECONDS),
)
def run_batch_items(self: Task, job_ids: list[str]) -> None:
    """Run one attempt of each of a batch's items sent together (jobs.dispatch)."""
    runner.run_items(job_ids, task_id=self.request.id or "")


# Beat runs these chores every few seconds; with task events on, Flower would list every run
# and bury the job runs people look for. send_events=False: the worker sends none for them.
@shared_task(name="aijobs.reap", ignore_result=True, send_events=False)
def reap() -> dict[str, int]:
    """Re-publish jobs that lost their message or worker (beat, every AIJOBS_REAPER_INTERVAL)."""
    return reaper.jobs_reap()


@shared_task(name="aijobs.cleanup", ignore_result=True, send_events=False)
def cleanup() -> dict[str, int]:
    """Free expired idempotency keys and delete old task results (beat, hourly)."""
    return reaper.records_cleanup()


@shared_task(name=dispatch.DISPATCH_TASK, ignore_result=True, send_events=False)
def dispatch_batches() -> int:
    """Publish batch items up to each batch's window (beat every second, and kicks)."""
    return dispatch.batches_dispatch()


# Retries are not Celery's: a failed try schedules the message again (jobs.webhooks), and the
# sweep hands it over when due, so a lost task costs a lease, not the message.
@shared_task(bind=True, name=webhooks.DELIVER_TASK, ignore_result=True)
def deliver_webhook(self: Task, message_id: str) -> str | None:
    """One try at delivering the webhook message."""
    return webhook_delivery.message_deliver(
        message_id=message_id, celery_task_id=self.request.id or ""
    )


@shared_task(name=webhooks.SWEEP_TASK, ignore_result=True, send_events=False)
def sweep_webhooks() -> int:
    """Hand over webhook messages that are due (beat, every AIJOBS_WEBHOOK_SWEEP_INTERVAL)."""
    return webhooks.messages_sweep()
