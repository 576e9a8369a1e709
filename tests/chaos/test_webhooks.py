"""Webhooks through a receiver that is down for a while and a worker SIGKILLed mid-run: once
the receiver answers, every event arrives, each webhook-id acknowledged exactly once."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from devtools.servers import free_port
from jobs.models import WebhookEvent
from jobs.webhooks import message_id
from tests.chaos.harness import CANARY, Stack
from tests.chaos.test_faults import calls_in_flight
from tests.integration.harness import WebhookReceiver, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

JOBS = 30
# Enough redeliveries for a job caught in the kill.
LOST_LEASES = "10"


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(AIJOBS_MAX_LOST_LEASES=LOST_LEASES)
    stack.start_workers(2)
    yield stack
    stack.stop()


def submit(stack: Stack, url: str) -> list[str]:
    run = uuid.uuid4().hex[:8]
    ids = []
    for i in range(JOBS):
        body = {
            "kind": "summarize",
            "input": {"text": f"Webhook run {run}, job {i}. {CANARY} [[sim:latency=800]]"},
            "webhook": url,
            "webhook_events_filter": ["start", "completed"],
        }
        answer = stack.api.request("POST", "/jobs", body)
        assert answer.status == 201, answer.body
        ids.append(answer.body["id"])
    return ids


def signing_secret(stack: Stack) -> str | None:
    found = stack.query(
        "SELECT secret FROM jobs_webhooksecret JOIN auth_user ON auth_user.id = user_id "
        "WHERE username = 'chaos'"
    )
    return found[0][0] if found else None


def test_a_receiver_down_for_a_while_gets_every_event_once(stack, rng, tmp_path):
    port = free_port()
    ids = submit(stack, f"http://127.0.0.1:{port}/hooks")  # nobody listens there yet
    expected = {
        message_id(job_id, event)
        for job_id in ids
        for event in (WebhookEvent.JOB_STARTED, WebhookEvent.JOB_COMPLETED)
    }
    wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")
    rng.choice(stack.alive_workers()).kill()
    stack.start_worker()
    stack.wait_all_terminal(ids, timeout=180)
    refused = stack.query("SELECT count(*) FROM jobs_webhookattempt WHERE http_status IS NULL")
    assert refused[0][0] > 0, "tries were made while the receiver was down"

    secret_file = tmp_path / "secret"
    secret_file.write_text(wait_for(lambda: signing_secret(stack), timeout=10, what="a secret"))
    receiver = WebhookReceiver.start(secret_file, port=port)
    try:
        wait_for(
            lambda: set(acknowledged(stack)) >= expected,
            timeout=120,
            what="every event acknowledged",
            interval=0.5,
        )
        received = receiver.received()
    finally:
        receiver.stop()

    # Every event reached the receiver, verified; a try whose answer came too late for the
    # sender (its deadline) may have reached it twice: at least once, as promised.
    assert all(r["verified"] for r in received)
    assert {r["webhook_id"] for r in received} == expected
    acks = acknowledged(stack)
    assert set(acks) == expected
    twice = [webhook_id for webhook_id, count in acks.items() if count > 1]
    assert not twice, f"acknowledged more than once: {twice}"
    delivered = stack.query(
        "SELECT status, count(*) FROM jobs_webhookmessage WHERE id = ANY(%s) GROUP BY status",
        (list(expected),),
    )
    assert delivered == [("delivered", len(expected))]
    lost = stack.query("SELECT sum(lost_leases) FROM jobs_job WHERE id = ANY(%s::uuid[])", (ids,))
    assert lost[0][0] > 0, "the kill hit jobs in flight, or the test proved nothing"


def acknowledged(stack: Stack) -> Counter[str]:
    """Per message, the tries the sender saw answered with a 2xx."""
    return Counter(
        message
        for (message,) in stack.query(
            "SELECT message_id FROM jobs_webhookattempt WHERE http_status BETWEEN 200 AND 299"
        )
    )
