"""Submitting and canceling jobs: input checked, limits and budget applied, on the real database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobs.attempts import CallReport, call_begin, call_finish
from jobs.errors import BudgetExceeded, InvalidInput
from jobs.models import Job, Outcome, UserLimits
from jobs.submission import job_submit
from jobs.usage import Usage

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
