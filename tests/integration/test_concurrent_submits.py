"""Many simultaneous requests with one Idempotency-Key make one job, over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.models import Job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REQUESTS = 16


def test_concurrent_requests_with_one_key_create_one_job(api):
    body = {"text": "Concurrent submission of the same order."}

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        answers = list(
            pool.map(
                lambda _: api.submit("summarize", body, **{"Idempotency-Key": "same"}),
                range(REQUESTS),
            )
        )

    assert Job.objects.count() == 1
    job_id = str(Job.objects.get().id)
    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [answer for answer in answers if answer.status == 201]
    assert created, "at least the first request succeeds"
    assert {answer.body["id"] for answer in created} == {job_id}
    assert sum(answer.headers.get("idempotent-replayed") != "true" for answer in created) == 1
    conflicts = [answer for answer in answers if answer.status == 409]
    assert all(answer.body["error"]["code"] == "idempotency_key_in_flight" for answer in conflicts)

    replay = api.submit("summarize", body, **{"Idempotency-Key": "same"})
    assert (replay.status, replay.body["id"], replay.headers["idempotent-replayed"]) == (
        201,
        job_id,
        "true",
    )


def test_concurrent_requests_with_distinct_keys_each_create_a_job(api):
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda n: api.submit(
                    "summarize", {"text": f"Order {n}."}, **{"Idempotency-Key": f"k{n}"}
                ),
                range(8),
            )
        )

    assert [answer.status for answer in answers] == [201] * 8
    assert Job.objects.count() == 8
