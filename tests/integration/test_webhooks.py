"""Webhooks end to end: the API, a real worker on the real broker, the simulator and a
receiver process verifying every signature with the standardwebhooks package."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs import dispatch
from jobs.webhook_secrets import secret_for
from tests.helpers import unique
from tests.integration.harness import WebhookReceiver, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BOTH = ["start", "completed"]
TEXT = "The lighthouse was lit again in October. Boats came home."


@pytest.fixture
def receiver(user):
    started = WebhookReceiver.start(secret_for(user).secret)
    yield started
    started.stop()


def arrived(receiver: WebhookReceiver, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        # Beat's dispatch round, which no process runs here: it ends a batch whose last
        # item's own round found the batch locked by another round.
        dispatch.batches_dispatch()
        received = receiver.received()
        return received if len(received) >= count else None

    return wait_for(found, timeout=60, what=f"{count} webhooks at the receiver")


def bodies(received: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each arrival's body by its type, every one verified."""
    assert all(item["verified"] for item in received), received
    return {item["type"]: json.loads(item["body"]) for item in received}


def test_a_job_sends_started_and_completed_signed_with_its_json(api, worker, receiver):
    body = {
        "kind": "summarize",
        "input": {"text": unique(TEXT)},
        "webhook": receiver.url,
        "webhook_events_filter": BOTH,
    }
    job = api.request("POST", "/jobs", body).body
    finished = api.wait(job["id"])
    received = arrived(receiver, 2)
    by_type = bodies(received)
    assert set(by_type) == {"job.started", "job.completed"}
    assert by_type["job.completed"]["data"] == finished
    assert by_type["job.started"]["data"]["id"] == job["id"]
    assert len({item["webhook_id"] for item in received}) == 2


def test_a_job_with_the_default_filter_sends_completed_only(api, worker, receiver):
    body = {"kind": "summarize", "input": {"text": unique(TEXT)}, "webhook": receiver.url}
    job = api.request("POST", "/jobs", body).body
    api.wait(job["id"])
    received = arrived(receiver, 1)
    assert [item["type"] for item in received] == ["job.completed"]


def test_a_canceled_job_sends_completed(api, worker, receiver):
    text = unique(f"{TEXT} [[sim:latency=3000]]")
    body = {"kind": "summarize", "input": {"text": text}, "webhook": receiver.url}
    job = api.request("POST", "/jobs", body).body
    assert api.request("POST", f"/jobs/{job['id']}/cancel").status == 200
    data = bodies(arrived(receiver, 1))["job.completed"]["data"]
    # Usage may differ: a call already on its way is still counted when it ends.
    assert (data["id"], data["status"]) == (job["id"], "canceled")


def test_a_batch_sends_its_own_started_and_completed_and_its_items_nothing(api, worker, receiver):
    items = [{"input": {"text": unique(TEXT)}} for _ in range(3)]
    body = {"kind": "summarize", "items": items, "webhook": receiver.url}
    batch = api.request("POST", "/batches", {**body, "webhook_events_filter": BOTH}).body
    received = arrived(receiver, 2)
    by_type = bodies(received)
    assert set(by_type) == {"batch.started", "batch.completed"}
    assert by_type["batch.completed"]["data"] == api.request("GET", f"/batches/{batch['id']}").body
    assert by_type["batch.completed"]["data"]["status"] == "finished"
