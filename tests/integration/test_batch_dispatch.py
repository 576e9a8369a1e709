"""A big batch on a real worker: the broker holds a window of it, and a job submitted on its
own meanwhile runs long before the batch is through (its message goes ahead of the items)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel

from jobs import dispatch
from jobs.models import UNFINISHED, Batch, BatchStatus, Job, Status
from tests.helpers import batch_of, unique
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WINDOW = 50
ITEMS = 2000
LATENCY = "[[sim:latency=200]]"
# Items finished before the single job is submitted: the batch is well under way by then.
UNDER_WAY = 100


class QueueSampler:
    """The messages waiting in the workers' queues, each time they are looked at: kombu keeps
    a list per queue and priority level, the queue's own name for priority 0."""

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.keys = [
            key
            for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.AIJOBS_BATCH_QUEUE)
            for key in (queue, *(f"{queue}{Channel.sep}{level}" for level in PRIORITY_STEPS[1:]))
        ]
        self.lengths: list[int] = []

    def sample(self) -> None:
        self.lengths.append(sum(int(self.client.llen(key)) for key in self.keys))


def finished_items(batch: Batch) -> int:
    return Job.objects.filter(batch=batch).exclude(status__in=UNFINISHED).count()


def overtaken_by(job: Job, batch: Batch) -> int:
    """Items published before the job was submitted and not started when it was."""
    waiting = Q(started_at__isnull=True) | Q(started_at__gt=job.started_at)
    return Job.objects.filter(waiting, batch=batch, enqueued_at__lt=job.created_at).count()


def cancel(batch: Batch) -> None:
    """End the batch's rest, so no later test's worker runs it."""
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.CANCELED)
    Job.objects.filter(batch=batch, status__in=UNFINISHED).update(
        status=Status.CANCELED, finished_at=timezone.now()
    )


def test_a_single_job_runs_while_another_users_big_batch_holds_a_window_of_the_broker(
    api, start_worker, other_user
):
    start_worker(AIJOBS_BATCH_WINDOW=str(WINDOW))
    batch = batch_of(other_user, [unique(f"Item {i}. It waits. {LATENCY}") for i in range(ITEMS)])
    queue = QueueSampler()
    dispatch.batches_kick()
    try:
        wait_for(
            lambda: queue.sample() or finished_items(batch) >= UNDER_WAY,
            timeout=60,
            what="the batch to be under way",
        )
        job_id = api.submit("summarize", {"text": unique(f"On its own. {LATENCY}")}).body["id"]
        wait_for(
            lambda: queue.sample() or Job.objects.get(pk=job_id).status == Status.SUCCEEDED,
            timeout=60,
            what="the single job to succeed",
        )
        unpublished = Job.objects.filter(batch=batch, enqueued_at__isnull=True).count()
        overtaken = overtaken_by(Job.objects.get(pk=job_id), batch)
    finally:
        cancel(batch)

    assert unpublished > 0, "the single job waited for the whole batch to be published"
    assert overtaken > 0, "the single job waited behind the items already on the broker"
    # The window, and the single job's own message; never the batch's thousands.
    assert max(queue.lengths) <= WINDOW + 1, max(queue.lengths)
    assert max(queue.lengths) > WINDOW / 2, "the window was filled, or the test proved nothing"
    batch.refresh_from_db()
    assert batch.started_at is not None
