"""A batch from the user's side: its items checked all together, stored at once, canceled,
run again.

A batch is all or nothing. Every item is validated by its kind before anything is written, and
a single bad item refuses the whole submission with the first problems listed; then the batch
row and all its jobs are stored in one transaction, the jobs in one COPY. The jobs are ordinary
queued jobs, but unpublished (`enqueued_at` NULL): the dispatcher (jobs.dispatch) hands them to
the broker a window at a time, so a large batch never floods it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from jobs import dispatch, events, limits, rows, submission, webhooks
from jobs.batch_files import BatchFileError, BatchItem
from jobs.errors import BatchAlreadyFinished, InvalidInput
from jobs.models import FINISHED, Batch, BatchStatus, Job, WebhookEvent

# A custom_id names an item in its results and can go into file names and URLs unchanged.
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The problems a refusal lists: enough to fix a file in one go, small enough to read.
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class ValidItem:
    custom_id: str
    input: dict[str, Any]  # as the job stores it: the kind's Input, defaults filled in
    input_tokens: int  # estimated, as the worker estimates it before the call


@dataclass(frozen=True)
class ValidBatch:
    kind: str
    model: str
    mode: str
    params: dict[str, Any]
    max_tokens: int
    items: list[ValidItem]
    fingerprint: str  # of the request, for Idempotency-Key
    target: dict[str, Any]  # the batch's webhook fields (its items get none)


@dataclass(frozen=True)
class BatchSubmission:
    batch: Batch
    replayed: bool


def batch_validate(
    *,
    kind: str,
    model: str | None,
    mode: str,
    params: dict[str, Any],
    items: Iterable[BatchItem],
    webhook: str | None = None,
    webhook_events_filter: list[str] | None = None,
) -> ValidBatch:
    """Every item checked as its job's input (`params` overridden by the item's own input),
    and the batch's webhook against the address rules.

    Raises InvalidInput whose details list the first MAX_PROBLEMS problems as
    `{item, custom_id, loc, msg}`, or BatchFileError for a file that cannot be read, has no
    items or has too many.
    """
    module = submission.input_kind(kind)
    submission.input_model_check(model)
    submission.input_mode_check(mode)
    _check_params(params)
    target = webhooks.webhook_target_check(webhook=webhook, events_filter=webhook_events_filter)
    head = {"kind": kind, "model": model, "mode": mode, "params": params}
    # As for a job: the webhook fields count only when there is a webhook.
    fingerprint = hashlib.sha256(
        submission.canonical_json(head | target if target["webhook"] else head)
    )
    checker = _ItemChecker(module, params)
    for item in items:
        checker.add(item)
        fingerprint.update(submission.canonical_json([item.custom_id, item.input]))
    return ValidBatch(
        kind=kind,
        model=model or settings.AIJOBS_MODELS[kind],
        mode=mode,
        params=params,
        max_tokens=module.MAX_TOKENS,
        items=checker.valid_items(),
        fingerprint=fingerprint.hexdigest(),
        target=target,
    )


def _check_params(params: Any) -> None:
    if not isinstance(params, dict):
        raise InvalidInput(
            "params must be an object", details=[{"loc": ["params"], "msg": "must be an object"}]
        )
    if "text" in params:
        msg = "text belongs to each item, not to the shared params"
        raise InvalidInput(f"params.text: {msg}", details=[{"loc": ["params", "text"], "msg": msg}])


class _ItemChecker:
    """Validates items one by one, collecting the valid ones and the first problems."""

    def __init__(self, module: ModuleType, params: dict[str, Any]) -> None:
        self._module = module
        self._params = params
        self._count = 0
        self._numbers: dict[str, int] = {}  # custom_id -> the item that has it
        self._valid: list[ValidItem] = []
        self._problems: list[dict[str, Any]] = []

    def add(self, item: BatchItem) -> None:
        self._count += 1
        if self._count > settings.AIJOBS_BATCH_MAX_ITEMS:
            raise BatchFileError(
                "too_many_items",
                f"a batch may have at most {settings.AIJOBS_BATCH_MAX_ITEMS} items "
                "(AIJOBS_BATCH_MAX_ITEMS)",
                status=413,
            )
        custom_id = str(item.number) if item.custom_id is None else item.custom_id
        id_ok = self._check_custom_id(item, custom_id)
        try:
            parsed = submission.input_parse(self._module, {**self._params, **item.input})
        except InvalidInput as exc:
            self._problem(item, custom_id, *exc.details)
            return
        if id_ok and not self._problems:
            # Once anything is wrong nothing is stored, so only the problems are worth keeping.
            self._valid.append(self._valid_item(custom_id, parsed))

    def _check_custom_id(self, item: BatchItem, custom_id: Any) -> bool:
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            msg = "must be 1 to 64 letters, digits, '_' or '-'"
            self._problem(item, custom_id, {"loc": ["custom_id"], "msg": msg})
            return False
        earlier = self._numbers.setdefault(custom_id, item.number)
        if earlier != item.number:
            msg = f"item {earlier} has this custom_id too; each must be unique in the batch"
            self._problem(item, custom_id, {"loc": ["custom_id"], "msg": msg})
            return False
        return True

    def _valid_item(self, custom_id: str, parsed: Any) -> ValidItem:
        prompt = self._module.build_prompt(parsed)
        return ValidItem(
            custom_id=custom_id,
            input=parsed.model_dump(mode="json", by_alias=True),
            input_tokens=limits.input_tokens_estimate(
                system=self._module.SYSTEM_PROMPT, prompt=prompt
            ),
        )

    def _problem(self, item: BatchItem, custom_id: Any, *details: dict[str, Any]) -> None:
        for detail in details:
            self._problems.append(
                {
                    "item": item.number,
                    "custom_id": custom_id,
                    "loc": detail["loc"],
                    "msg": detail["msg"],
                }
            )
        if len(self._problems) >= MAX_PROBLEMS:
            raise self._refusal()

    def _refusal(self) -> InvalidInput:
        first = self._problems[:MAX_PROBLEMS]
        return InvalidInput(
            f"{len(first)} problems in the batch's items (the first listed); nothing was stored",
            details=first,
        )

    def valid_items(self) -> list[ValidItem]:
        if self._problems:
            raise self._refusal()
        if not self._valid:
            raise BatchFileError("empty_file", "the batch has no items")
        return self._valid


def batch_estimate_usd(valid: ValidBatch) -> Decimal:
    """The batch's worst case at standard prices: what its items' first calls reserve."""
    return sum(
        (
            limits.reservation_usd(
                model=valid.model, input_tokens=item.input_tokens, max_tokens=valid.max_tokens
            )
            for item in valid.items
        ),
        Decimal(0),
    )


def batch_submit(
    *,
    owner: AbstractBaseUser,
    kind: str,
    model: str | None,
    mode: str,
    params: dict[str, Any],
    items: Iterable[BatchItem],
    idempotency_key: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: list[str] | None = None,
) -> BatchSubmission:
    """Validate every item and the webhook, check the budget, then store the batch and its
    jobs at once.

    With `idempotency_key`, a request repeating an earlier one (same key, same body) gets that
    earlier batch back (`replayed`), as a job submission does.
    """
    valid = batch_validate(
        kind=kind,
        model=model,
        mode=mode,
        params=params,
        items=items,
        webhook=webhook,
        webhook_events_filter=webhook_events_filter,
    )
    with transaction.atomic():
        if idempotency_key is not None:
            earlier = submission.earlier_for_key(
                Batch, owner=owner, key=idempotency_key, fingerprint=valid.fingerprint
            )
            if earlier is not None:
                return BatchSubmission(batch=earlier, replayed=True)
        batch = _store(owner=owner, valid=valid, idempotency_key=idempotency_key)
    return BatchSubmission(batch=batch, replayed=False)


def _store(
    *,
    owner: AbstractBaseUser,
    valid: ValidBatch,
    idempotency_key: str | None = None,
    rerun_of: Batch | None = None,
) -> Batch:
    """The batch row and its jobs; call inside a transaction, so either all exist or none."""
    _check_budget(owner, valid)
    # A batch is one submission for the rate limit: pacing its items is the dispatcher's job.
    limits.check_submission_rate(owner.pk)
    batch = Batch.objects.create(
        owner=owner,
        kind=valid.kind,
        model=valid.model,
        mode=valid.mode,
        params=valid.params,
        total=len(valid.items),
        idempotency_key=idempotency_key,
        request_fingerprint=valid.fingerprint,
        rerun_of=rerun_of,
        **valid.target,
    )
    rows.jobs_copy(_jobs(owner, batch, valid))
    # The first window goes out now rather than at beat's next round.
    dispatch.batches_kick()
    # The owner's lists show the new batch and its items.
    events.topics_pulse([events.owner_topic(owner.pk)])
    return batch


def _jobs(owner: AbstractBaseUser, batch: Batch, valid: ValidBatch) -> Iterator[Job]:
    return (
        Job(
            owner=owner,
            kind=valid.kind,
            model=valid.model,
            input=item.input,
            batch=batch,
            custom_id=item.custom_id,
            position=position,
        )
        for position, item in enumerate(valid.items, start=1)
    )


def _check_budget(owner: AbstractBaseUser, valid: ValidBatch) -> None:
    left = limits.budget_left(owner.pk)
    if left is None:
        return
    estimate = batch_estimate_usd(valid)
    if estimate > left:
        raise limits.budget_exceeded(
            owner.pk, f"has ${max(left, Decimal(0)):.2f} left; this batch may cost ${estimate:.2f}"
        )


def batch_cancel(*, batch: Batch) -> Batch:
    """Cancel the batch and every unfinished item; BatchAlreadyFinished once it has ended.

    Its batch.completed message is written in the same transaction."""
    now = timezone.now()
    completed = WebhookEvent.BATCH_COMPLETED
    with transaction.atomic():
        open_statuses = (BatchStatus.QUEUED, BatchStatus.RUNNING)
        ended = Batch.objects.filter(pk=batch.pk, status__in=open_statuses).update(
            status=BatchStatus.CANCELED, finished_at=now
        )
        if ended:
            submission.jobs_cancel(Job.objects.filter(batch=batch))
            # Its page and the lists learn of it at once; the unpublished items sent no events.
            events.topics_pulse(events.job_topics(owner_id=batch.owner_id, batch_id=batch.pk))
        if ended and webhooks.wants(batch.webhook, batch.webhook_events, completed):
            message = webhooks.message_new(
                event=completed,
                subject_id=batch.pk,
                owner_id=batch.owner_id,
                url=batch.webhook,
                now=now,
            )
            webhooks.messages_add([message])
    batch.refresh_from_db()
    if not ended:
        raise BatchAlreadyFinished(f"batch is already {batch.status}")
    return batch


def batch_rerun(*, owner: AbstractBaseUser, batch: Batch, status: str = "failed") -> Batch:
    """A new batch (`rerun_of` naming this one) of the items that ended in `status`, with their
    custom_ids and the batch's webhook, checked and budgeted as any submission."""
    if batch.owner_id != owner.pk:
        raise ValueError("a batch can only be rerun by its owner")
    if status not in FINISHED:
        msg = f"must be one of {', '.join(FINISHED)}"
        raise InvalidInput(f"status: {msg}", details=[{"loc": ["status"], "msg": msg}])
    jobs = batch.jobs.filter(status=status).order_by("position")
    if not jobs.exists():
        msg = f"the batch has no {status} items"
        raise InvalidInput(msg, details=[{"loc": ["status"], "msg": msg}])
    items = (
        BatchItem(number=job.position, custom_id=job.custom_id, input=job.input)
        for job in jobs.only("position", "custom_id", "input").iterator(chunk_size=2000)
    )
    valid = batch_validate(
        kind=batch.kind,
        model=batch.model,
        mode=batch.mode,
        params=batch.params,
        items=items,
        webhook=batch.webhook or None,
        webhook_events_filter=batch.webhook_events,
    )
    with transaction.atomic():
        return _store(owner=owner, valid=valid, rerun_of=batch)
