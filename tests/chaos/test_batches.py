"""A batch through a worker SIGKILLed, Redis restarted empty and PostgreSQL restarted, each
while items still wait to be dispatched: every item still ends, exactly once."""

from __future__ import annotations

import uuid

import pytest

from tests.chaos.harness import CANARY, Stack, check_invariants
from tests.chaos.test_faults import calls_in_flight
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WINDOW = 30
ITEMS = 600
# Enough redeliveries for an item caught in several of the faults.
LOST_LEASES = "10"


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(AIJOBS_MAX_LOST_LEASES=LOST_LEASES, AIJOBS_BATCH_WINDOW=str(WINDOW))
    stack.start_workers(2)
    yield stack
    stack.stop()


def submit_batch(stack: Stack, texts: list[str]) -> str:
    """A batch of the stack's user, stored as batch_submit stores one, and the kick after it."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from jobs import dispatch\n"
        "from tests.helpers import batch_of\n"
        "owner = get_user_model().objects.get(username='chaos')\n"
        f"batch = batch_of(owner, {texts!r})\n"
        "dispatch.batches_kick()\n"
        "print(batch.id)\n"
    )
    return stack.manage("shell", "-c", code).strip().splitlines()[-1]


def waiting_to_be_dispatched(stack: Stack, batch_id: str) -> int:
    return stack.query(
        "SELECT count(*) FROM jobs_job WHERE batch_id = %s AND enqueued_at IS NULL", (batch_id,)
    )[0][0]


def test_a_batch_through_every_fault_ends_each_item_once(stack, rng):
    before = stack.simulator.stats()["total"]
    run = uuid.uuid4().hex[:8]
    texts = [f"Batch {run}, item {i}. {CANARY} [[sim:latency=300]]" for i in range(ITEMS)]
    batch_id = submit_batch(stack, texts)
    ids = [row[0] for row in stack.query(
        "SELECT id::text FROM jobs_job WHERE batch_id = %s ORDER BY position", (batch_id,)
    )]  # fmt: skip
    waiting_at_each_fault = []

    def fault_mid_batch() -> None:
        wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")
        waiting_at_each_fault.append(waiting_to_be_dispatched(stack, batch_id))

    fault_mid_batch()
    rng.choice(stack.alive_workers()).kill()
    stack.start_worker()
    fault_mid_batch()
    stack.restart(stack.redis)  # no persistence: every message in flight is gone
    fault_mid_batch()
    stack.restart(stack.postgres)
    stack.wait_all_terminal(ids, timeout=400)

    assert all(waiting_at_each_fault), f"a fault came after the dispatch: {waiting_at_each_fault}"
    assert check_invariants(stack, ids, before) == {"succeeded": ITEMS}
    lost = stack.query("SELECT sum(lost_leases) FROM jobs_job WHERE batch_id = %s", (batch_id,))
    assert lost[0][0] > 0, "the kill hit items in flight, or the test proved nothing"
    wait_for(
        lambda: (
            stack.query("SELECT status FROM jobs_batch WHERE id = %s", (batch_id,))
            == [("finished",)]
        ),
        timeout=30,
        what="the batch to finish with its last item",
    )
