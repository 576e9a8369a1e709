"""Small builders shared by tests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from jobs.attempts import CallReport, call_begin, call_finish
from jobs.models import (
    Batch,
    DeliveryStatus,
    Job,
    Outcome,
    ProviderCall,
    WebhookAttempt,
    WebhookEvent,
    WebhookMessage,
)
from jobs.usage import Usage


def record_call(
    job: Job,
    *,
    attempt: int,
    usage: Usage,
    outcome: Outcome = Outcome.OK,
    seq: int = 0,
    result: dict[str, Any] | None = None,
) -> ProviderCall:
    """A finished provider call of `job`'s attempt, through the services the worker uses;
    with `result`, the accepted answer that succeeds the job."""
    job.attempts = attempt
    call = call_begin(job=job, seq=seq, reserve_usd=Decimal(0))
    call_finish(call=call, report=CallReport(outcome=outcome, usage=usage), result=result)
    return call


def succeed(job: Job, result: dict[str, Any], *, attempt: int) -> bool:
    """Finish the job the way a worker does: an accepted answer, recorded with its result."""
    record_call(job, attempt=attempt, usage=Usage(input_tokens=10, output_tokens=5), result=result)
    job.refresh_from_db()
    return job.status == "succeeded" and job.result == result


def unique(text: str) -> str:
    """Job text with a unique word, so the simulator keeps this job's fault counters apart."""
    return f"{text} [ref {uuid.uuid4().hex}]"


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together (each on its own database connection), and
    return what each returned or raised, in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        start.wait()
        try:
            return call()
        except Exception as exc:
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def batch_of(owner: Any, texts: list[str], *, kind: str = "summarize") -> Batch:
    """A batch stored as batch_submit stores one: its row, then its items as queued jobs in
    one bulk INSERT, none published (the dispatcher publishes them)."""
    model = settings.AIJOBS_MODELS[kind]
    # In one transaction, as batch_submit's: a dispatcher's round between the two would find
    # the batch with no items left and end it.
    with transaction.atomic():
        batch = Batch.objects.create(owner=owner, kind=kind, model=model, total=len(texts))
        Job.objects.bulk_create(
            Job(owner=owner, kind=kind, model=model, input={"text": text}, batch=batch,
                custom_id=str(position), position=position)
            for position, text in enumerate(texts, start=1)
        )  # fmt: skip
    return batch


# Loopback, as every address in the tests; nothing is sent to it (no delivery task runs).
UNSENT_WEBHOOK = "http://127.0.0.1:9/hooks"


def webhook_message(
    subject: Job | Batch,
    *,
    event: WebhookEvent = WebhookEvent.JOB_COMPLETED,
    status: DeliveryStatus = DeliveryStatus.DELIVERED,
    tries: Sequence[dict[str, Any]] = (),
    created_at: datetime | None = None,
) -> WebhookMessage:
    """A message about `subject` as delivery leaves it: `status`, and a WebhookAttempt per
    item of `tries` (its fields), numbered from 1. Written directly: no task is sent."""
    now = created_at or timezone.now()
    message = WebhookMessage.objects.create(
        id=f"msg_{uuid.uuid4().hex}",
        owner_id=subject.owner_id,
        type=event,
        job=subject if isinstance(subject, Job) else None,
        batch=subject if isinstance(subject, Batch) else None,
        url=subject.webhook or UNSENT_WEBHOOK,
        status=status,
        attempts=len(tries),
        created_at=now,
        next_attempt_at=now + timedelta(seconds=20),
        retry_until=now + timedelta(hours=24),
        delivered_at=now if status == DeliveryStatus.DELIVERED else None,
    )
    for number, fields in enumerate(tries, start=1):
        WebhookAttempt.objects.create(message=message, attempt=number, **fields)
    return message


def session_cookie(client: Any, user: Any) -> str:
    """A Cookie header signing a real HTTP client in as `user` (a session the test client made)."""
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"
