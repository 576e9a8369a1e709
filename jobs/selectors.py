"""Read-side queries: every one is scoped to its owner."""

from __future__ import annotations

import base64
import binascii
import time as time_module
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from jobs import rows
from jobs.errors import InvalidInput
from jobs.events import job_events_read
from jobs.models import (
    FINISHED,
    ApiToken,
    Batch,
    Job,
    ProviderCall,
    Status,
    WebhookMessage,
)
from jobs.usage import TOKEN_COUNTS, TOKEN_FIELDS

MAX_PAGE = 100
GROUPINGS = {"day": "day", "kind": "job__kind", "model": "model"}
# Result rows fetched per round trip while a batch's results stream.
RESULT_CHUNK = 2000


def job_get(*, owner: AbstractBaseUser, job_id: UUID) -> Job | None:
    """The owner's job, or None: the status poll, the most frequent request of all."""
    return rows.job_of_owner(job_id=job_id, owner_id=owner.pk)


@dataclass(frozen=True)
class Page:
    items: list[Any]  # jobs, batches or webhook messages
    next_cursor: str | None


def job_list(
    *,
    owner: AbstractBaseUser,
    status: str | None = None,
    kind: str | None = None,
    batch: UUID | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    jobs = Job.objects.filter(owner=owner)
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    if batch:
        jobs = jobs.filter(batch_id=batch)
    return _newest_first(jobs, limit=limit, cursor=cursor)


def _newest_first(rows: QuerySet[Any], *, limit: int, cursor: str | None) -> Page:
    rows = rows.order_by("-created_at", "-id")
    if cursor:
        created_at, last_id = _decode_cursor(cursor, rows.model)
        rows = rows.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id))
    items = list(rows[: limit + 1])
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    last = items[limit - 1]
    return Page(items=items[:limit], next_cursor=_encode_cursor(last))


def _encode_cursor(row: Job | Batch | WebhookMessage) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, model: type[Any]) -> tuple[datetime, Any]:
    """The cursor's time and id, the id as the model's primary key takes it (a UUID, a str)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, last_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(created), model._meta.pk.to_python(last_id)
    except (ValueError, ValidationError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "cursor is invalid",
            details=[{"loc": ["query", "cursor"], "msg": "not a cursor from this API"}],
        ) from None


def job_calls(*, job: Job) -> QuerySet[ProviderCall]:
    return job.calls.order_by("attempt", "seq")


def usage_totals(
    *, owner: AbstractBaseUser, start: date | None, end: date | None, group_by: str | None
) -> dict[str, Any]:
    """Token and cost totals of the owner's calls in [start, end] (whole UTC days)."""
    calls = ProviderCall.objects.filter(job__owner=owner)
    if start:
        calls = calls.filter(created_at__gte=_day_start(start))
    if end:
        calls = calls.filter(created_at__lt=_day_start(end + timedelta(days=1)))
    sums = {name: Sum(name, default=0) for name in TOKEN_FIELDS}
    totals = calls.aggregate(calls=Count("id"), **sums)
    groups: list[dict[str, Any]] = []
    if group_by:
        column = GROUPINGS[group_by]
        grouped = calls.annotate(day=TruncDate("created_at")) if group_by == "day" else calls
        rows = grouped.values(column).annotate(calls=Count("id"), **sums).order_by(column)
        groups = [{"key": str(row.pop(column)), **row} for row in rows]
    return {"totals": totals, "groups": groups}


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def job_wait_finished(*, job_id: UUID, seconds: float) -> bool:
    """True once the job's events say it finished, False when `seconds` pass first.

    The job's event stream is read from its start, so a job that finished after the caller
    last read its row is seen at once. It waits in Redis alone: no thread, no database
    connection, however many wait.
    """
    deadline = time_module.monotonic() + seconds
    after = None
    while (remaining := deadline - time_module.monotonic()) > 0:
        events = await job_events_read(job_id, after, block_ms=max(1, int(remaining * 1000)))
        if any(_ends_the_job(event, data) for _id, event, data in events):
            return True
        if events:
            after = events[-1][0]
    return False


def _ends_the_job(event: str, data: dict[str, Any]) -> bool:
    return event == "done" or (event == "status" and data.get("status") in FINISHED)


# --- batches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProgress:
    counts: dict[str, int]  # jobs per state, every state present
    total: int
    finished: int
    usage: dict[str, Any]  # the four token counts and cost_usd (Decimal) of its jobs so far


def batch_get(*, owner: AbstractBaseUser, batch_id: UUID) -> Batch | None:
    return Batch.objects.filter(owner=owner, pk=batch_id).first()


def batch_list(
    *,
    owner: AbstractBaseUser,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 20,
) -> Page:
    """Newest first, paginated as jobs are."""
    batches = Batch.objects.filter(owner=owner)
    if status:
        batches = batches.filter(status=status)
    return _newest_first(batches, limit=limit, cursor=cursor)


def batch_progress(*, batch: Batch) -> BatchProgress:
    """Counts per state and usage summed in one GROUP BY that PostgreSQL answers from the
    job_batch_status index alone (it holds the token columns), however large the batch."""
    counts = dict.fromkeys(Status.values, 0)
    usage: dict[str, Any] = dict.fromkeys(TOKEN_COUNTS, 0) | {"cost_usd": Decimal(0)}
    for group in batch_progress_query(batch=batch):
        counts[group["status"]] = group["jobs"]
        for name in TOKEN_FIELDS:
            usage[name] += group[name]
    finished = sum(counts[status] for status in FINISHED)
    return BatchProgress(counts=counts, total=batch.total, finished=finished, usage=usage)


def batch_progress_query(*, batch: Batch) -> QuerySet[Job]:
    """Per state: its jobs and the sums of their token counts and cost."""
    return (
        Job.objects.filter(batch_id=batch.pk)
        .values("status")
        .annotate(jobs=Count("*"), **{name: Sum(name) for name in TOKEN_FIELDS})
        .order_by()
    )


RESULT_COLUMNS = ("id", "custom_id", "status", "result", "error_code", "error_message")


def batch_result_rows(*, batch: Batch) -> Iterator[dict[str, Any]]:
    """One row per item in submission order, read in chunks so a large batch streams."""
    jobs = (
        Job.objects.filter(batch_id=batch.pk)
        .order_by("position")
        .values_list(*RESULT_COLUMNS, *TOKEN_FIELDS)
    )
    for job_id, custom_id, status, result, code, message, *usage in jobs.iterator(
        chunk_size=RESULT_CHUNK
    ):
        counts = dict(zip(TOKEN_COUNTS, usage[:-1], strict=True))
        yield {
            "custom_id": custom_id,
            "job_id": str(job_id),
            "status": status,
            "result": result,
            "error_code": code,
            "error_message": message,
            **counts,
            "cost_usd": f"{usage[-1]:.6f}",
        }


# --- webhook deliveries ------------------------------------------------------------------------


def delivery_list(
    *,
    owner: AbstractBaseUser,
    status: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page:
    """The owner's webhook messages, newest first and paginated as jobs are, each with its
    tries (fetched for the whole page in one more query)."""
    messages = WebhookMessage.objects.filter(owner=owner).prefetch_related("tries")
    if status:
        messages = messages.filter(status=status)
    return _newest_first(messages, limit=limit, cursor=cursor)


def delivery_get(*, owner: AbstractBaseUser, delivery_id: str) -> WebhookMessage | None:
    return (
        WebhookMessage.objects.filter(owner=owner, pk=delivery_id).prefetch_related("tries").first()
    )


def subject_deliveries(*, subject: Job | Batch) -> list[WebhookMessage]:
    """A job's or a batch's webhook messages with their tries, in the order they were sent."""
    return list(subject.webhook_messages.order_by("created_at", "id").prefetch_related("tries"))


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's tokens, revoked ones included, newest first."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def api_token_get(*, user: AbstractBaseUser, token_id: int) -> ApiToken | None:
    return ApiToken.objects.filter(user=user, pk=token_id).first()
