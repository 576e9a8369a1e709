"""Webhooks: where they may go, the outbox rows, and the bookkeeping of each try.

A message is an outbox row written by the statement (or transaction) that makes the state
change it reports (jobs.rows), and handed to a Celery task (DELIVER_TASK, message id only)
once that commits. A try claims the message with a lease, is logged as a WebhookAttempt,
and ends delivered, scheduled again (exponential backoff until retry_until) or failed;
the sweep hands over what is due and was not handed over (a retry, a refused send, a lost
task), so delivery is at least once with the same webhook-id on every try. The HTTP side
is the worker's (workers.webhooks).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from celery_app import app as celery_app
from jobs.errors import DeliveryPending, InvalidInput
from jobs.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookEvent,
    WebhookFilter,
    WebhookMessage,
)
from jobs.presenters import present_batch, present_job, timestamp

log = logging.getLogger(__name__)

# The task that makes one try; workers.tasks registers under these names.
DELIVER_TASK = "aijobs.deliver_webhook"
SWEEP_TASK = "aijobs.sweep_webhooks"
# Fixed for good: every stored message id was derived from it.
MESSAGE_NAMESPACE = uuid.UUID("4f1c2a8e-6b0d-5e3a-9c71-2d8f0b6a4e19")
MAX_URL_LENGTH = 2000
DEFAULT_PORTS = {"https": 443, "http": 80}
# Categories of address a webhook may not reach unless listed (checked in this order).
REFUSED_ADDRESSES = (
    ("loopback", "is_loopback"),
    ("unspecified", "is_unspecified"),
    ("link-local", "is_link_local"),
    ("multicast", "is_multicast"),
    ("reserved", "is_reserved"),
    ("private", "is_private"),
)
# Past those, any address outside the public internet (shared address space 100.64.0.0/10,
# where some clouds serve instance metadata; documentation and benchmarking ranges).
NOT_PUBLIC = "non-public"
BACKOFF_FACTOR = 4
BACKOFF_CAP = timedelta(hours=4)
# A try's lease outlives its deadline by this much, so no second try starts while it runs.
LEASE_MARGIN_SECONDS = 5.0
SWEEP_BATCH = 500
RESPONSE_HEAD_CHARS = 1000
MAX_ERROR_CHARS = 500
# What the log says of a try that never recorded how it ended (its worker was killed), once
# the next try has taken the message over; until then it has neither answer nor error.
UNFINISHED_TRY = "the try did not finish (its worker stopped)"
# Event types per filter value.
FILTER_OF = {
    WebhookEvent.JOB_STARTED: WebhookFilter.START,
    WebhookEvent.BATCH_STARTED: WebhookFilter.START,
    WebhookEvent.JOB_COMPLETED: WebhookFilter.COMPLETED,
    WebhookEvent.BATCH_COMPLETED: WebhookFilter.COMPLETED,
}


def message_id(subject_id: UUID | str, event: WebhookEvent) -> str:
    """The id of a job's or a batch's message for `event`: the same whoever computes it, so a
    repeated change adds no second message."""
    return "msg_" + uuid.uuid5(MESSAGE_NAMESPACE, f"{UUID(str(subject_id))}:{event}").hex


def retry_until(created_at: datetime) -> datetime:
    return created_at + timedelta(hours=settings.AIJOBS_WEBHOOK_RETRY_HOURS)


def lease() -> timedelta:
    return timedelta(seconds=settings.AIJOBS_WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)


# --- the address rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """A webhook URL that passed the rules, and the address a try connects to (pinned: the
    name is not looked up again between the check and the request)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # with the query, as the request line carries it
    addresses: tuple[str, ...]  # all checked; tried in the resolver's order


def webhook_check(url: str) -> str:
    """The URL normalised, or InvalidInput (loc ["webhook"]) when the rules refuse it."""
    return destination_resolve(url).url


def destination_resolve(url: str) -> Destination:
    """Check `url` against the address rules, resolving its host; InvalidInput if refused.

    https, or http to a listed host; no user name or password; and no resolved address
    loopback, private, link-local, multicast, reserved, unspecified or otherwise not public
    (an IPv4-mapped IPv6 address counts as its IPv4 one), unless the host name or that
    address is listed in AIJOBS_WEBHOOK_ALLOWED_HOSTS.
    """
    parts = _split(url)
    host, port = parts.hostname or "", _port(parts)
    allowed = {name.lower() for name in settings.AIJOBS_WEBHOOK_ALLOWED_HOSTS}
    if parts.scheme == "http" and host not in allowed:
        raise _refused("must be https (plain http only to hosts in AIJOBS_WEBHOOK_ALLOWED_HOSTS)")
    addresses = _resolve(host, port)
    if host not in allowed:
        for address in addresses:
            category = _refused_category(address)
            if category and str(address) not in allowed:
                raise _refused(f"{host} resolves to {address}, a {category} address")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{port}"
    path = parts.path or "/"
    normal = urlunsplit((parts.scheme, netloc, path, parts.query, ""))
    path += f"?{parts.query}" if parts.query else ""
    return Destination(normal, parts.scheme, host, port, path, tuple(map(str, addresses)))


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise _refused("is not a URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise _refused("must be an https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise _refused("must not carry a user name or password")
    return parts._replace(scheme=parts.scheme.lower())


def _port(parts: SplitResult) -> int:
    try:
        return parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise _refused("has an invalid port") from None


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _refused(f"{host} cannot be resolved") from None
    addresses = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        addresses.append(mapped or address)
    if not addresses:
        raise _refused(f"{host} cannot be resolved")
    return list(dict.fromkeys(addresses))


def _refused_category(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    named = next((name for name, flag in REFUSED_ADDRESSES if getattr(address, flag)), None)
    return named or (None if address.is_global else NOT_PUBLIC)


def _refused(msg: str) -> InvalidInput:
    return InvalidInput(f"webhook: {msg}", details=[{"loc": ["webhook"], "msg": msg}])


def webhook_target_check(
    *, webhook: str | None, events_filter: Iterable[str] | None
) -> dict[str, Any]:
    """The model fields of a submission's `webhook` and `webhook_events_filter`, checked;
    InvalidInput naming the field otherwise."""
    events = _events_filter(events_filter)
    return {"webhook": webhook_check(webhook) if webhook else "", "webhook_events": events}


def _events_filter(events_filter: Iterable[str] | None) -> list[str]:
    if events_filter is None:
        return [WebhookFilter.COMPLETED.value]
    events = list(dict.fromkeys(str(event) for event in events_filter))
    if not events or any(event not in WebhookFilter.values for event in events):
        msg = f"must list one or more of {', '.join(WebhookFilter.values)}"
        raise InvalidInput(
            f"webhook_events_filter: {msg}",
            details=[{"loc": ["webhook_events_filter"], "msg": msg}],
        )
    return [value for value in WebhookFilter.values if value in events]


# --- the outbox -------------------------------------------------------------------------------


def wants(webhook: str, events: list[str], event: WebhookEvent) -> bool:
    """Whether a job or batch with this webhook and events filter sends `event`."""
    return bool(webhook) and FILTER_OF[event] in events


def message_new(
    *, event: WebhookEvent, subject_id: UUID, owner_id: int, url: str, now: datetime
) -> WebhookMessage:
    """The (unsaved) message of `event` for the job or batch `subject_id`."""
    is_batch = event.of_batch
    return WebhookMessage(
        id=message_id(subject_id, event),
        owner_id=owner_id,
        type=event,
        job_id=None if is_batch else subject_id,
        batch_id=subject_id if is_batch else None,
        url=url,
        created_at=now,
        next_attempt_at=now,
        retry_until=retry_until(now),
        handed_over_at=now,
    )


def messages_add(messages: list[WebhookMessage]) -> None:
    """Store messages in the caller's transaction (an id already there adds nothing) and hand
    them over once it commits."""
    if messages:
        WebhookMessage.objects.bulk_create(messages, ignore_conflicts=True)
        messages_hand_over([message.pk for message in messages])


def messages_hand_over(message_ids: list[str]) -> None:
    """Send the messages' delivery tasks once the current transaction commits (at once outside
    one). A broker that refuses never fails the change: the sweep sends them later."""
    if message_ids:
        transaction.on_commit(partial(_send, message_ids), robust=True)


def _send(message_ids: list[str]) -> None:
    for index, pk in enumerate(message_ids):
        try:
            celery_app.send_task(DELIVER_TASK, args=[pk])
        except Exception as exc:
            log.warning("webhook %s: broker refused the task (%s); the sweep resends it", pk, exc)
            # Once the broker refuses one, the rest would each wait out the publish retries.
            unsent = message_ids[index:]
            WebhookMessage.objects.filter(pk__in=unsent).update(handed_over_at=None)
            return


def messages_sweep() -> int:
    """Hand over the pending messages that are due and not handed over since their last try
    (or longer ago than a lease: the task was lost); how many. Beat runs it every
    AIJOBS_WEBHOOK_SWEEP_INTERVAL."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            WebhookMessage.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .filter(Q(handed_over_at__isnull=True) | Q(handed_over_at__lt=now - lease()))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:SWEEP_BATCH]
        )
        WebhookMessage.objects.filter(pk__in=due).update(handed_over_at=now)
        messages_hand_over(due)
    return len(due)


def message_redeliver(*, message: WebhookMessage) -> WebhookMessage:
    """One more try of a delivered or failed message, handed over at once; DeliveryPending
    while it is still pending. Its retries stop after this try (retry_until = now): a failing
    redeliver does not start another 24 hours."""
    now = timezone.now()
    with transaction.atomic():
        again = WebhookMessage.objects.filter(pk=message.pk).exclude(status=DeliveryStatus.PENDING)
        if not again.update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            retry_until=now,
            handed_over_at=now,
            lease_expires_at=None,
        ):
            raise DeliveryPending("the message is still being delivered")
        messages_hand_over([message.pk])
    message.refresh_from_db()
    return message


# --- one try ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Try:
    """A try in progress: the message it holds (its payload fixed) and its log row."""

    message: WebhookMessage
    attempt: WebhookAttempt

    @property
    def body(self) -> str:
        """The bytes every try sends: the payload as stored, serialised one way."""
        return json.dumps(self.message.payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class TryResult:
    """How a try ended: an answer's status, or an error with none."""

    http_status: int | None = None
    error: str = ""
    latency_ms: int = 0
    response_head: str = ""
    # The address rules refused the URL: nothing was sent, and nothing will be.
    refused: bool = False


def try_begin(*, message_id: str, celery_task_id: str) -> Try | None:
    """Claim the message for one try if it is due and no try holds it; None otherwise (already
    delivered or failed, scheduled later, or held by a try in progress).

    The first try fixes the body (the job's or batch's JSON now), so every later try sends
    the same bytes. A try logged with neither an answer nor an error is in progress, or was
    until its worker died: taking over, this one says so.
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = (
            WebhookMessage.objects.filter(
                pk=message_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
            )
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
            .update(attempts=F("attempts") + 1, lease_expires_at=now + lease())
        )
        if not claimed:
            return None
        message = WebhookMessage.objects.select_related("job", "batch").get(pk=message_id)
        if message.payload is None:
            message.payload = payload_build(message)
            message.save(update_fields=["payload"])
        message.tries.filter(http_status__isnull=True, error="").update(error=UNFINISHED_TRY)
        attempt = WebhookAttempt.objects.create(
            message=message, attempt=message.attempts, celery_task_id=celery_task_id
        )
    return Try(message, attempt)


def payload_build(message: WebhookMessage) -> dict[str, Any]:
    """The body: the event, when it happened, and the job or batch as the API shows it."""
    data = present_job(message.job) if message.job else present_batch(message.batch)
    return {"type": message.type, "timestamp": timestamp(message.created_at), "data": data}


def try_record(*, held: Try, result: TryResult) -> str:
    """Log how the try ended and move the message on, if the try still holds it (its attempt
    number fences off a try whose lease lapsed); the message's status after it.

    2xx: delivered. No answer, 408, 429 or 5xx: tried again after a backoff, until
    retry_until. Anything else (3xx, other 4xx, a refused address): failed at once.
    """
    now = timezone.now()
    message = held.message
    changes: dict[str, Any] = {"lease_expires_at": None}
    if result.http_status is not None and 200 <= result.http_status < 300:
        changes |= {"status": DeliveryStatus.DELIVERED, "delivered_at": now}
    elif _retryable(result) and (due := now + backoff(message.attempts)) <= message.retry_until:
        # Not handed over since this try: the sweep sends it when due.
        changes |= {"next_attempt_at": due, "handed_over_at": None}
    else:
        changes |= {"status": DeliveryStatus.FAILED}
    with transaction.atomic():
        WebhookAttempt.objects.filter(pk=held.attempt.pk).update(
            http_status=result.http_status,
            error=result.error[:MAX_ERROR_CHARS],
            latency_ms=result.latency_ms,
            response_head=result.response_head[:RESPONSE_HEAD_CHARS],
        )
        WebhookMessage.objects.filter(
            pk=message.pk, status=DeliveryStatus.PENDING, attempts=message.attempts
        ).update(**changes)
    return changes.get("status", DeliveryStatus.PENDING)


def _retryable(result: TryResult) -> bool:
    if result.refused:
        return False
    status = result.http_status
    return status is None or status in (408, 429) or status >= 500


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th try: base x 4^(n-1), capped at 4 h, jittered (half to
    all of it, so receivers coming back are not hit by every sender at once)."""
    base = settings.AIJOBS_WEBHOOK_RETRY_BASE_SECONDS * BACKOFF_FACTOR ** min(attempts - 1, 20)
    delay = min(timedelta(seconds=base), BACKOFF_CAP)
    return delay * random.uniform(0.5, 1.0)
