"""A worker SIGKILLed in the middle of a Claude call: the job still finishes, exactly once."""

from __future__ import annotations

import pytest

from jobs.models import Job
from tests.integration.conftest import unique
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
    calls = api.calls(job_id)
    # The killed worker's call was cut off before it could be recorded; the
    # simulator saw it, so it is the one call we could not account for.
    assert [(c["attempt"], c["outcome"]) for c in calls] == [(2, "ok")]
    assert simulator.stats()["total"] - before == 2
    assert job["usage"]["input_tokens"] == calls[0]["input_tokens"]
