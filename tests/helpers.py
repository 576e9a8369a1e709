"""Small builders shared by tests."""

from __future__ import annotations

import uuid
from decimal import Decimal

from jobs.models import Job, Outcome, ProviderCall
from jobs.services import CallReport, call_begin, call_finish
from jobs.usage import Usage


def record_call(
    job: Job, *, attempt: int, usage: Usage, outcome: Outcome = Outcome.OK, seq: int = 0
) -> ProviderCall:
    """A finished provider call of `job`'s attempt, through the services the worker uses."""
    job.attempts = attempt
    call = call_begin(job=job, seq=seq, reserve_usd=Decimal(0))
    call_finish(call=call, report=CallReport(outcome=outcome, usage=usage))
    return call


def unique(text: str) -> str:
    """Job text with a unique word, so the simulator keeps this job's fault counters apart."""
    return f"{text} [ref {uuid.uuid4().hex}]"
