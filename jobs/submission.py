"""A job from the user's side: its input checked, stored, sent to the workers, canceled,
run again.

A job is a row before it is a message: the row is written first and the
message sent once it is committed, so a worker never looks for a job that is
not there, and the reaper sends again whatever the broker lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from types import ModuleType
from typing import Any, TypeVar
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from celery_app import app as celery_app
from jobs import kinds, limits, rows, webhooks
from jobs.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    JobAlreadyFinished,
    JobNotFinished,
)
from jobs.events import job_status_publish, job_topics, owner_topic, topics_pulse
from jobs.models import UNFINISHED, Batch, Job, Mode, Status, WebhookEvent

log = logging.getLogger(__name__)

# The tasks that run a job, and a batch's items; workers.tasks registers them under these
# names, and the names (not an import) are what keep jobs independent of workers.
RUN_JOB_TASK = "aijobs.run_job"
RUN_BATCH_ITEMS_TASK = "aijobs.run_batch_items"

# What a cancel reads to write the job.completed messages.
WEBHOOK_COLUMNS = ("owner_id", "webhook", "webhook_events")

# What an Idempotency-Key can name: a job, or a batch.
Keyed = TypeVar("Keyed", Job, Batch)


@dataclass(frozen=True)
class Submission:
    job: Job
    replayed: bool


def job_input_validate(*, kind: str, input: dict[str, Any], model: str | None) -> BaseModel:
    """The kind's Input for this body, or InvalidInput with field-level details."""
    module = input_kind(kind)
    input_model_check(model)
    return input_parse(module, input)


def input_kind(kind: str) -> ModuleType:
    """The kind module called `kind`, or InvalidInput naming the known kinds."""
    try:
        return kinds.get_kind(kind)
    except KeyError:
        raise _invalid(["kind"], f"must be one of {', '.join(kinds.names())}") from None


def input_model_check(model: str | None) -> None:
    """Refuse a model the price table does not know (None means the kind's own)."""
    if model is not None and model not in settings.AIJOBS_MODEL_PRICES:
        raise _invalid(["model"], f"must be one of {', '.join(settings.AIJOBS_MODEL_PRICES)}")


def input_mode_check(mode: str) -> None:
    """Only standard mode runs today; economy (Message Batches) is refused until it exists."""
    if mode == Mode.ECONOMY:
        raise _invalid(["mode"], "economy mode is not available yet; use standard")
    if mode != Mode.STANDARD:
        raise _invalid(["mode"], f"must be one of {', '.join(Mode.values)}")


def input_parse(module: ModuleType, input: dict[str, Any]) -> BaseModel:
    """`input` validated by the kind's Input, or InvalidInput with field-level details."""
    if _contains_nul(input):
        # PostgreSQL cannot store NUL in JSON text; refuse it before anything is written.
        raise _invalid(["input"], "NUL characters are not allowed")
    try:
        parsed = module.Input.model_validate(input)
    except ValidationError as exc:
        raise InvalidInput("input is invalid", details=_field_errors(exc)) from None
    limit = settings.AIJOBS_MAX_INPUT_CHARS
    if len(getattr(parsed, "text", "")) > limit:
        raise _invalid(["input", "text"], f"at most {limit} characters")
    return parsed


def _invalid(loc: list[str], msg: str) -> InvalidInput:
    return InvalidInput(f"{'.'.join(loc)}: {msg}", details=[{"loc": loc, "msg": msg}])


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["input", *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def canonical_json(value: Any) -> bytes:
    """One spelling of a JSON value whatever its key order, for fingerprints of request bodies."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def request_fingerprint(
    *, kind: str, input: dict[str, Any], model: str | None, target: dict[str, Any] | None = None
) -> str:
    """Of the request's body; its webhook fields count only when it has a webhook, so the
    fingerprints of requests without one stay what they were before webhooks existed."""
    body = {"kind": kind, "input": input, "model": model}
    if target and target["webhook"]:
        body |= target
    return hashlib.sha256(canonical_json(body)).hexdigest()


def job_submit(
    *,
    owner: AbstractBaseUser,
    kind: str,
    input: dict[str, Any],
    model: str | None = None,
    mode: str = Mode.STANDARD,
    idempotency_key: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: list[str] | None = None,
) -> Submission:
    """Store a queued job and send its message once the row is committed.

    Without an idempotency key the job is one INSERT, which needs no transaction
    of its own; the message goes out right after it. A webhook is checked against the
    address rules (jobs.webhooks) before anything is written.
    """
    input_mode_check(mode)
    parsed = job_input_validate(kind=kind, input=input, model=model)
    target = webhooks.webhook_target_check(webhook=webhook, events_filter=webhook_events_filter)
    fingerprint = request_fingerprint(kind=kind, input=input, model=model, target=target)
    store = partial(
        _store,
        owner=owner,
        kind=kind,
        model=model,
        parsed=parsed,
        fingerprint=fingerprint,
        target=target,
    )
    if idempotency_key is None:
        return store()
    with transaction.atomic():
        earlier = earlier_for_key(Job, owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if earlier is not None:
            return Submission(job=earlier, replayed=True)
        return store(idempotency_key=idempotency_key)


def job_rerun(*, owner: AbstractBaseUser, job: Job) -> Job:
    """A new job with the finished `job`'s kind, input, model and webhook, `rerun_of` naming it.

    Its input and webhook are checked again and the owner's limits and budget apply, as to
    any submission. A job still queued, running or retrying raises JobNotFinished.
    """
    if job.owner_id != owner.pk:
        raise ValueError("a job can only be rerun by its owner")
    if not job.is_finished:
        raise JobNotFinished(f"job is still {job.status}; it can be rerun once it has finished")
    parsed = job_input_validate(kind=job.kind, input=job.input, model=job.model)
    target = webhooks.webhook_target_check(
        webhook=job.webhook or None, events_filter=job.webhook_events
    )
    fingerprint = request_fingerprint(kind=job.kind, input=job.input, model=job.model)
    return _store(
        owner=owner,
        kind=job.kind,
        model=job.model,
        parsed=parsed,
        fingerprint=fingerprint,
        target=target,
        rerun_of=job,
    ).job


def _store(
    *,
    owner: AbstractBaseUser,
    kind: str,
    model: str | None,
    parsed: BaseModel,
    fingerprint: str,
    target: dict[str, Any],
    idempotency_key: str | None = None,
    rerun_of: Job | None = None,
) -> Submission:
    limits.check_budget_left(owner.pk)
    limits.check_submission_rate(owner.pk)
    job = Job.objects.create(
        owner=owner,
        kind=kind,
        model=model or settings.AIJOBS_MODELS[kind],
        input=parsed.model_dump(mode="json", by_alias=True),
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        enqueued_at=timezone.now(),
        rerun_of=rerun_of,
        **target,
    )
    transaction.on_commit(partial(_announce, job_id=job.id, owner_id=owner.pk))
    return Submission(job=job, replayed=False)


def _announce(*, job_id: UUID, owner_id: int) -> None:
    """A new job's `queued` event, then its message: in that order, so no worker's `running`
    can come first."""
    job_status_publish(job_id, Status.QUEUED, topics=[owner_topic(owner_id)])
    job_enqueue(job_id=job_id)


def earlier_for_key(
    model: type[Keyed], *, owner: AbstractBaseUser, key: str, fingerprint: str
) -> Keyed | None:
    """The job or batch an earlier request with this key made, if it is still inside the
    replay window; IdempotencyKeyReused when that request had another body.

    Call it inside the transaction that stores the new row: a transaction-scoped advisory lock
    serialises requests with one key, and a second request while the first is uncommitted gets
    409 (IdempotencyKeyInFlight) instead of waiting.
    """
    lock = f"idempotency:{model._meta.model_name}:{owner.pk}:{key}"
    if not rows.try_advisory_lock(lock):
        raise IdempotencyKeyInFlight("a request with this Idempotency-Key is still being processed")
    earlier = model.objects.filter(owner=owner, idempotency_key=key).first()
    if earlier is None:
        return None
    window = timedelta(hours=settings.AIJOBS_IDEMPOTENCY_WINDOW_HOURS)
    if earlier.created_at < timezone.now() - window:
        # Past the window the key is free again; the old row keeps its data.
        model.objects.filter(pk=earlier.pk).update(idempotency_key=None)
        return None
    if earlier.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return earlier


def job_enqueue(*, job_id: UUID, in_batch: bool = False) -> bool:
    """Send the job's message; only the id travels, so user text never sits in the broker.

    The job row says it was published (enqueued_at) from the start. When the broker refuses,
    that mark is cleared and the job is published later (by the reaper; a batch's item by the
    dispatcher): the job was accepted and must not fail, nor the request that made it.
    """
    if in_batch:
        return batch_items_enqueue([job_id])
    return _send(RUN_JOB_TASK, [job_id], args=[str(job_id)])


def batch_items_enqueue(job_ids: Sequence[UUID | str], *, countdown: float | None = None) -> bool:
    """Send one message for these batch items, run in turn by one worker slot (workers.tasks).

    They go to the batch queue, behind every other job (settings, AIJOBS_BATCH_QUEUE). A
    message with a countdown is an item's next attempt: when the broker refuses it, the
    item keeps its mark and the reaper sends it once it is overdue, its delay kept.
    """
    return _send(
        RUN_BATCH_ITEMS_TASK,
        job_ids,
        args=[[str(job_id) for job_id in job_ids]],
        countdown=countdown,
        queue=settings.AIJOBS_BATCH_QUEUE,
        priority=settings.AIJOBS_BATCH_PRIORITY,
    )


def batch_items_send(job_ids: Sequence[UUID | str], *, per_message: int) -> None:
    """Send these batch items' messages in turn, `per_message` items to a message; once the
    broker refuses one, the rest are marked unpublished without trying (each try waits out
    the publish retries), for the dispatcher's next round."""
    for start in range(0, len(job_ids), per_message):
        end = start + per_message
        if not batch_items_enqueue(job_ids[start:end]):
            Job.objects.filter(pk__in=job_ids[end:]).update(enqueued_at=None)
            return


def _send(task: str, job_ids: Sequence[UUID | str], **options: Any) -> bool:
    try:
        celery_app.send_task(task, **options)
    except Exception as exc:
        log.warning(
            "jobs %s: broker refused the message (%s); it will be sent again",
            ", ".join(map(str, job_ids)),
            exc,
        )
        if options.get("countdown") is None:
            Job.objects.filter(pk__in=job_ids).update(enqueued_at=None)
        return False
    return True


def job_cancel(*, job: Job) -> Job:
    """Cancel an unfinished job; a worker still calling Claude will find its lease gone.

    A worker streaming the job's answer learns of the cancel from the key its
    status event sets (jobs.events), and closes the stream.
    """
    canceled = jobs_cancel(Job.objects.filter(pk=job.pk))
    job.refresh_from_db()
    if canceled == 0:
        raise JobAlreadyFinished(f"job is already {job.status}")
    topics_pulse(job_topics(owner_id=job.owner_id, batch_id=job.batch_id))
    return job


@transaction.atomic
def jobs_cancel(jobs: QuerySet[Job]) -> int:
    """Cancel the unfinished ones of `jobs`; how many were canceled.

    Their rows are locked first, so the ones whose status events go out (at commit) are
    exactly the ones this UPDATE canceled, not one a worker finished meanwhile; the
    job.completed messages of those with a webhook are written in the same transaction.
    """
    unfinished = jobs.filter(status__in=UNFINISHED).select_for_update()
    rows = list(unfinished.values_list("pk", "batch_id", "enqueued_at", *WEBHOOK_COLUMNS))
    now = timezone.now()
    canceled = Job.objects.filter(pk__in=[pk for pk, *_ in rows]).update(
        status=Status.CANCELED,
        finished_at=now,
        lease_expires_at=None,
        next_retry_at=None,
    )
    completed = WebhookEvent.JOB_COMPLETED
    webhooks.messages_add(
        [
            webhooks.message_new(
                event=completed, subject_id=pk, owner_id=owner_id, url=url, now=now
            )
            for pk, _, _, owner_id, url, events in rows
            if webhooks.wants(url, events, completed)
        ]
    )
    # A batch item the dispatcher never published has no worker and is followed on its batch's
    # page: a 100,000-item cancel sends events for its window, not for every row.
    for pk, batch_id, enqueued_at, *_ in rows:
        if batch_id is None or enqueued_at is not None:
            job_status_publish(pk, Status.CANCELED)
    return canceled
