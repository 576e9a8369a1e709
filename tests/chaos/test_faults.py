"""Faults on a whole private stack: killed workers, restarted Redis and PostgreSQL, a broker
that is down at submission, workers racing for copies of one job, a provider that misbehaves
and /health through real outages. After each, every job is terminal and RELIABILITY-NOTES'
invariants hold. Random choices come from the `rng` fixture: AIJOBS_TEST_SEED replays them."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import pytest

from tests.chaos.harness import Stack, check_invariants
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# Enough redeliveries for a job caught in several of the kills below.
LOST_LEASES = "10"
# The shortest stall /health can be told of: the stall test waits this long.
STALL_SECONDS = 10


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(AIJOBS_MAX_LOST_LEASES=LOST_LEASES, AIJOBS_STALL_SECONDS=str(STALL_SECONDS))
    stack.start_worker()
    yield stack
    stack.stop()


def texts(n: int, directive: str = "") -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"Chaos run {run}, job {i}. The lamp was lit again. {directive}" for i in range(n)]


def calls_in_flight(stack: Stack) -> bool:
    return bool(stack.query("SELECT 1 FROM jobs_providercall WHERE outcome = 'pending' LIMIT 1"))


def test_workers_killed_again_and_again_lose_nothing(stack, rng):
    stack.start_worker()
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(200, "[[sim:latency=300]]"))

    for _ in range(3):
        wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")
        rng.choice(stack.alive_workers()).kill()
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


# Worker log lines: "[2026-11-05 10:00:00,123: INFO/MainProcess] job <id> attempt 1 claimed ..."
LOG_LINE = re.compile(
    r"^\[(\S+ \S+): \w+/[^\]]*\] job (\S+) (attempt \d+ claimed|not claimable)", re.M
)
RACE_LATENCY_MS = 1000


def claims_and_skips(stack: Stack) -> tuple[dict[str, datetime], dict[str, list[datetime]]]:
    """When each job was claimed, and when copies of it were skipped, from every worker's log
    (one machine, one clock)."""
    claimed: dict[str, datetime] = {}
    skipped: dict[str, list[datetime]] = {}
    for worker in stack.workers:
        for moment, job_id, what in LOG_LINE.findall(worker.log_path.read_text(errors="replace")):
            at = datetime.strptime(moment, "%Y-%m-%d %H:%M:%S,%f")
            if what == "not claimable":
                skipped.setdefault(job_id, []).append(at)
            else:
                claimed[job_id] = at
    return claimed, skipped


def test_two_workers_racing_for_copies_of_each_job_run_it_once(stack):
    for worker in stack.alive_workers():
        worker.stop()
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(60, f"[[sim:latency={RACE_LATENCY_MS}]]"))
    stack.publish_again(ids, copies=3)
    racers = stack.start_workers(2)

    stack.wait_all_terminal(ids, timeout=120)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    attempts = stack.query("SELECT max(attempts) FROM jobs_job WHERE id = ANY(%s::uuid[])", (ids,))
    assert attempts == [(1,)]
    wait_for(
        lambda: sum(len(claims_and_skips(stack)[1].get(i, [])) for i in ids) >= 2 * len(ids),
        timeout=30,
        what="every extra copy to be delivered and skipped",
    )
    claimed, skipped = claims_and_skips(stack)
    # A copy skipped within the call's latency of the claim met the job running: a real race.
    window = RACE_LATENCY_MS / 1000
    raced = [
        i for i in ids if any(abs((at - claimed[i]).total_seconds()) < window for at in skipped[i])
    ]
    assert len(raced) >= len(ids) // 2, f"only {len(raced)} of {len(ids)} jobs were raced for"
    busy = [worker for worker in racers if "claimed" in worker.log_path.read_text()]
    assert len(busy) == 2, "both workers took jobs"


def test_health_is_503_through_each_outage_and_200_after(stack):
    assert stack.health()[0] == 200
    with stack.down(stack.redis):
        status, body = stack.health()
        assert (status, body["broker"], body["database"]) == (503, False, True)
    wait_for(lambda: stack.health()[0] == 200, timeout=60, what="health back after Redis")
    with stack.down(stack.postgres):
        status, body = stack.health()
        assert (status, body["database"]) == (503, False)
    wait_for(lambda: stack.health()[0] == 200, timeout=60, what="health back after PostgreSQL")

    for worker in stack.alive_workers():
        worker.stop()
    ids = stack.submit_many(texts(1))
    status, body = wait_for(
        lambda: (answer := stack.health())[0] == 503 and answer,
        timeout=STALL_SECONDS + 30,
        what="a queued job with no worker to show as stalled",
    )
    assert (body["jobs_stalled"], body["database"], body["broker"]) == (True, True, True)
    stack.start_worker()
    stack.wait_all_terminal(ids, timeout=60)
    status, body = stack.health()
    assert (status, body["ok"], body["jobs_stalled"]) == (200, True, False)


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


def test_a_misbehaving_provider_costs_exactly_the_expected_calls(stack, rng):
    before = stack.simulator.stats()["total"]
    plan = [rng.choice(list(FAULTS)) for _ in range(60)]
    ids = [stack.submit_many(texts(1, directive))[0] for directive in plan]

    stack.wait_all_terminal(ids, timeout=240)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}
    sql = "SELECT job_id::text, count(*) FROM jobs_providercall WHERE job_id = ANY(%s::uuid[])"
    calls = dict(stack.query(f"{sql} GROUP BY job_id", (ids,)))
    assert [calls[job_id] for job_id in ids] == [FAULTS[directive] for directive in plan]
