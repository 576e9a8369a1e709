"""Submitting and canceling jobs: input checked, limits and budget applied, on the real database."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from uuid import uuid4

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from kombu.transport.redis import Channel

from celery_app import app as celery_app
from jobs.attempts import CallReport, call_begin, call_finish
from jobs.errors import BudgetExceeded, InvalidInput, JobNotFinished
from jobs.models import Job, Outcome, Status, UserLimits
from jobs.submission import (
    RUN_BATCH_ITEMS_TASK,
    RUN_JOB_TASK,
    batch_items_enqueue,
    job_cancel,
    job_enqueue,
    job_rerun,
    job_submit,
)
from jobs.usage import Usage
from tests.helpers import batch_of

pytestmark = pytest.mark.django_db


def submit(user, n: int = 1) -> list[Job]:
    return [
        job_submit(owner=user, kind="summarize", input={"text": f"Text {i}."}).job for i in range(n)
    ]


def test_submissions_are_refused_while_the_budget_is_spent(user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.10"))
    (job,) = submit(user)
    job.attempts = 1
    call = call_begin(job=job, seq=0, reserve_usd=Decimal("0.05"))
    call_finish(call=call, report=CallReport(outcome=Outcome.OK, usage=Usage(input_tokens=100_000)))

    with pytest.raises(BudgetExceeded):
        submit(user)
    assert Job.objects.filter(owner=user).count() == 1


def test_invalid_input_raises_before_anything_is_stored(user):
    with pytest.raises(InvalidInput) as error:
        job_submit(owner=user, kind="summarize", input={"text": ""})
    assert error.value.details[0]["loc"][:2] == ["input", "text"]
    assert Job.objects.count() == 0


def test_a_rerun_copies_the_request_and_names_the_job_it_reruns(user):
    labels = {"text": "Late again.", "labels": ["complaint", "praise"], "multi_label": True}
    original = job_submit(owner=user, kind="classify", input=labels, model="claude-opus-4-5").job
    job_cancel(job=original)

    rerun = job_rerun(owner=user, job=original)

    stored = Job.objects.get(pk=rerun.pk)
    assert stored.rerun_of_id == original.id
    assert (stored.kind, stored.input, stored.model) == (
        original.kind,
        original.input,
        original.model,
    )
    assert (stored.status, stored.owner_id) == (Status.QUEUED, user.pk)
    assert list(original.reruns.all()) == [stored]


def test_an_unfinished_job_is_not_rerun(user):
    (job,) = submit(user)

    with pytest.raises(JobNotFinished):
        job_rerun(owner=user, job=job)
    assert Job.objects.count() == 1


def test_only_the_owner_reruns_a_job(user, other_user):
    (job,) = submit(user)
    job_cancel(job=job)

    with pytest.raises(ValueError, match="owner"):
        job_rerun(owner=other_user, job=job)
    assert Job.objects.count() == 1


def waiting(key: str) -> int:
    """Messages waiting in one of kombu's Redis lists: a queue's own name holds priority 0,
    `name<sep><level>` the others."""
    return int(redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(key))


def test_a_batch_item_waits_on_the_batch_queue_behind_every_other_job():
    single, batch = settings.CELERY_TASK_DEFAULT_QUEUE, settings.AIJOBS_BATCH_QUEUE
    last = f"{batch}{Channel.sep}{settings.AIJOBS_BATCH_PRIORITY}"
    before = waiting(single), waiting(batch), waiting(last)

    # Both queues are declared by now: a message for one must not reach the other.
    assert job_enqueue(job_id=uuid4(), in_batch=True)
    assert job_enqueue(job_id=uuid4())
    # A retry goes to the exchange and routing key its message came with.
    retry = {"exchange": celery_app.amqp.queues[batch].exchange.name, "routing_key": batch}
    celery_app.send_task(
        RUN_JOB_TASK, args=[str(uuid4())], priority=settings.AIJOBS_BATCH_PRIORITY, **retry
    )

    assert (waiting(single), waiting(batch), waiting(last)) == (
        before[0] + 1,
        before[1],
        before[2] + 2,
    )


def test_batch_items_are_sent_together_as_a_task_of_their_own():
    single = settings.CELERY_TASK_DEFAULT_QUEUE
    last = f"{settings.AIJOBS_BATCH_QUEUE}{Channel.sep}{settings.AIJOBS_BATCH_PRIORITY}"
    item_ids, job_id = [uuid4(), uuid4()], uuid4()

    assert batch_items_enqueue(item_ids)
    assert newest_task(last) == (RUN_BATCH_ITEMS_TASK, [list(map(str, item_ids))])
    # The reaper's resend of one item.
    assert job_enqueue(job_id=item_ids[0], in_batch=True)
    assert newest_task(last) == (RUN_BATCH_ITEMS_TASK, [[str(item_ids[0])]])
    assert job_enqueue(job_id=job_id)
    assert newest_task(single) == (RUN_JOB_TASK, [str(job_id)])


def test_a_refused_send_unmarks_its_items_but_a_refused_retry_keeps_its_mark(user, monkeypatch):
    """Unmarked, the dispatcher sends an item at once; a retry must wait out its delay,
    and the reaper sends it once overdue."""
    batch = batch_of(user, ["One. Two.", "Three. Four."])
    first, second = batch.jobs.order_by("position")
    Job.objects.filter(batch=batch).update(enqueued_at=timezone.now())

    def broker_down(name: str, **options: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(celery_app, "send_task", broker_down)

    assert not batch_items_enqueue([first.id], countdown=5.0)
    assert not batch_items_enqueue([second.id])
    marked = dict(Job.objects.filter(batch=batch).values_list("pk", "enqueued_at"))
    assert marked[first.id] is not None
    assert marked[second.id] is None


def newest_task(key: str) -> tuple[str, list[str]]:
    """The task name and arguments of the message last pushed to one of kombu's Redis lists."""
    message = json.loads(redis.Redis.from_url(settings.CELERY_BROKER_URL).lindex(key, 0))
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args
