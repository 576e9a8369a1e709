"""Faults on a whole private stack: killed workers, restarted Redis and PostgreSQL, a broker
that is down at submission, competing workers and a provider that misbehaves. After each,
every job is terminal and RELIABILITY-NOTES' invariants hold."""

from __future__ import annotations

import random
import uuid

import pytest

from tests.chaos.harness import Stack, check_invariants
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# Enough redeliveries for a job caught in several of the kills below.
LOST_LEASES = "10"


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(AIJOBS_MAX_LOST_LEASES=LOST_LEASES)
    stack.start_worker()
    yield stack
    stack.stop()


def texts(n: int, directive: str = "") -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"Chaos run {run}, job {i}. The lamp was lit again. {directive}" for i in range(n)]


def calls_in_flight(stack: Stack) -> bool:
    return bool(stack.query("SELECT 1 FROM jobs_providercall WHERE outcome = 'pending' LIMIT 1"))


def test_workers_killed_again_and_again_lose_nothing(stack):
    stack.start_worker()
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(200, "[[sim:latency=300]]"))

    for _ in range(3):
        wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")
        alive = [worker for worker in stack.workers if worker.proc.poll() is None]
        random.choice(alive).kill()
        stack.start_worker()
    stack.wait_all_terminal(ids, timeout=240)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    lost = stack.query("SELECT sum(lost_leases) FROM jobs_job WHERE id = ANY(%s::uuid[])", (ids,))
    assert lost[0][0] > 0, "the kills hit jobs in flight, or the test proved nothing"


def test_redis_restarted_mid_run_loses_nothing(stack):
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(100, "[[sim:latency=400]]"))
    wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")

    stack.restart(stack.redis)  # no persistence: every queued message is gone
    stack.wait_all_terminal(ids, timeout=180)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}


def test_postgres_restarted_mid_run_and_everyone_recovers(stack):
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(100, "[[sim:latency=400]]"))
    wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")

    stack.restart(stack.postgres)
    stack.wait_all_terminal(ids, timeout=180)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    assert stack.api.request("GET", "/jobs?limit=1").status == 200, "web reconnected by itself"


def test_jobs_submitted_while_the_broker_is_down_still_run(stack):
    before = stack.simulator.stats()["total"]
    with stack.down(stack.redis):
        ids = stack.submit_many(texts(10))  # every one accepted: 201
        unpublished = stack.query(
            "SELECT count(*) FROM jobs_job WHERE id = ANY(%s::uuid[]) AND enqueued_at IS NULL",
            (ids,),
        )[0][0]
    assert unpublished == len(ids)

    stack.wait_all_terminal(ids, timeout=120)
    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}


def test_two_workers_competing_run_each_job_once(stack):
    while len([w for w in stack.workers if w.proc.poll() is None]) < 2:
        stack.start_worker()
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(100, "[[sim:latency=100]]"))

    stack.wait_all_terminal(ids, timeout=120)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    attempts = stack.query("SELECT max(attempts) FROM jobs_job WHERE id = ANY(%s::uuid[])", (ids,))
    assert attempts == [(1,)]
    busy = [
        w for w in stack.workers if w.proc.poll() is None and "claimed" in w.log_path.read_text()
    ]
    assert len(busy) >= 2, "both workers took jobs"


# Each fault and the number of provider calls it takes to succeed.
FAULTS = {
    "": 1,
    "[[sim:429*1]]": 2,
    "[[sim:529*2]]": 3,
    "[[sim:500*1]]": 2,
    "[[sim:timeout*1]]": 2,
    "[[sim:invalid*1]]": 2,
    "[[sim:429*1]] [[sim:invalid*1]]": 3,
}


def test_a_misbehaving_provider_costs_exactly_the_expected_calls(stack):
    before = stack.simulator.stats()["total"]
    plan = [random.choice(list(FAULTS)) for _ in range(60)]
    ids = [stack.submit_many(texts(1, directive))[0] for directive in plan]

    stack.wait_all_terminal(ids, timeout=240)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    sql = "SELECT job_id::text, count(*) FROM jobs_providercall WHERE job_id = ANY(%s::uuid[])"
    calls = dict(stack.query(f"{sql} GROUP BY job_id", (ids,)))
    assert [calls[job_id] for job_id in ids] == [FAULTS[directive] for directive in plan]
