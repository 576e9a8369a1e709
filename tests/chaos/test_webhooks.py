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

        def acknowledged() -> Counter[str]:
            return Counter(r["webhook_id"] for r in receiver.received() if r["status"] == 204)

        wait_for(
            lambda: set(acknowledged()) >= expected,
            timeout=120,
            what="every event acknowledged",
            interval=0.5,
        )
        received = receiver.received()
    finally:
        receiver.stop()

    assert all(r["verified"] for r in received)
    assert acknowledged_once(received) == expected
    delivered = stack.query(
        "SELECT id, status FROM jobs_webhookmessage WHERE id = ANY(%s)", (list(expected),)
    )
    assert {status for _, status in delivered} == {"delivered"}
    assert len(delivered) == len(expected)
    lost = stack.query("SELECT sum(lost_leases) FROM jobs_job WHERE id = ANY(%s::uuid[])", (ids,))
    assert lost[0][0] > 0, "the kill hit jobs in flight, or the test proved nothing"


def acknowledged_once(received: list[dict]) -> set[str]:
    """The ids acknowledged (204), failing if any was acknowledged twice."""
    counts = Counter(r["webhook_id"] for r in received if r["status"] == 204)
    twice = [webhook_id for webhook_id, count in counts.items() if count > 1]
    assert not twice, f"acknowledged more than once: {twice}"
    return set(counts)
