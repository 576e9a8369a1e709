"""Read-side queries: every one is scoped to its owner."""

from __future__ import annotations

import base64
import binascii
import time as time_module
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from jobs import rows
from jobs.errors import InvalidInput
from jobs.events import job_events_read
from jobs.models import FINISHED, ApiToken, Job, ProviderCall
from jobs.usage import TOKEN_FIELDS

MAX_PAGE = 100
GROUPINGS = {"day": "day", "kind": "job__kind", "model": "model"}


def job_get(*, owner: AbstractBaseUser, job_id: UUID) -> Job | None:
    """The owner's job, or None: the status poll, the most frequent request of all."""
    return rows.job_of_owner(job_id=job_id, owner_id=owner.pk)


@dataclass(frozen=True)
class Page:
    items: list[Job]
    next_cursor: str | None


def job_list(
    *,
    owner: AbstractBaseUser,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    jobs = Job.objects.filter(owner=owner).order_by("-created_at", "-id")
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    if cursor:
        created_at, last_id = _decode_cursor(cursor)
        jobs = jobs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id))
    items = list(jobs[: limit + 1])
    if len(items) <= limit:
        return Page(items=items, next_cursor=None)
    last = items[limit - 1]
    return Page(items=items[:limit], next_cursor=_encode_cursor(last))


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, job_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(created), UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
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


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's tokens, revoked ones included, newest first."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def api_token_get(*, user: AbstractBaseUser, token_id: int) -> ApiToken | None:
    return ApiToken.objects.filter(user=user, pk=token_id).first()
