"""A worker SIGKILLed in the middle of a Claude call: the job still finishes, exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import Job
from jobs.reaper import calls_mark_unknown
from tests.helpers import unique
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_job_of_a_killed_worker_finishes_once_on_a_new_worker(api, start_worker, simulator):
    first = start_worker()
    before = simulator.stats()["total"]
    job_id = api.submit("summarize", {"text": unique("A long story. [[sim:latency=2500]]")}).body[
        "id"
    ]
    wait_for(
        lambda: (
            simulator.stats()["total"] > before and Job.objects.get(pk=job_id).status == "running"
        ),
        timeout=30,
        what="the first worker to be inside the Claude call",
    )

    first.kill()
    start_worker()
    job = api.wait(job_id, seconds=120)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 2, "the killed attempt counts, the second one finished"
    assert Job.objects.get(pk=job_id).lost_leases == 1
    calls = api.calls(job_id)
    # The killed worker's call was recorded as pending before it went out, so
    # every request the simulator saw has its row, the cut-off one included.
    assert [(c["attempt"], c["outcome"]) for c in calls] == [(1, "pending"), (2, "ok")]
    assert simulator.stats()["total"] - before == len(calls)
    assert job["usage"]["input_tokens"] == calls[1]["input_tokens"]

    # Once a lease's time has passed, the reaper settles it as unknown (maybe billed).
    later = timezone.now() + timedelta(seconds=settings.AIJOBS_LEASE_SECONDS)
    assert calls_mark_unknown(now=later) == 1
    assert [c["outcome"] for c in api.calls(job_id)] == ["unknown", "ok"]
