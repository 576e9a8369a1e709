"""Small builders shared by tests."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from jobs.attempts import CallReport, call_begin, call_finish
from jobs.models import Job, Outcome, ProviderCall
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
