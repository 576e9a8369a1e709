"""A user's budget and running limit under real contention: two workers with sixteen
threads take the user's jobs at once. Nothing is overspent, and the database never shows
more of the user's jobs running than the limit."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from tests.chaos.harness import Stack, check_invariants
from tests.integration.harness import ApiClient, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MAX_RUNNING = 3
BUDGET = Decimal("0.60")
JOBS = 40
# Input priced high and output near free, so a reservation (estimated input + max_tokens of
# output) is close to what a call really costs: the budget runs out after a few dozen
# jobs instead of thousands, while every call still reserves its worst case.
PRICE = {"input": "100", "output": "1", "cache_write": "100", "cache_read": "100"}
PRICES = dict.fromkeys(("claude-haiku-4-5", "claude-sonnet-4-6"), PRICE)


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(AIJOBS_MODEL_PRICES=json.dumps(PRICES))
    stack.start_workers(2)
    yield stack
    stack.stop()


def limited_user(stack: Stack) -> tuple[ApiClient, int]:
    token = stack.new_token("limited")
    user_id = stack.query("SELECT id FROM auth_user WHERE username = 'limited'")[0][0]
    stack.query(
        "INSERT INTO jobs_userlimits (user_id, max_running, budget_usd, budget_period) "
        "VALUES (%s, %s, %s, 'month') RETURNING id",
        (user_id, MAX_RUNNING, BUDGET),
    )
    return ApiClient(base_url=stack.api.base_url, token=token), user_id


def test_a_budget_and_a_running_limit_hold_under_contention(stack):
    client, user_id = limited_user(stack)
    before = stack.simulator.stats()["total"]
    run = uuid.uuid4().hex[:8]
    texts = [f"Limited run {run}, job {i}. [[sim:latency=1000]]" for i in range(JOBS)]
    ids = stack.submit_many(texts, client=client)
    peak = 0

    def all_finished() -> bool:
        nonlocal peak
        ((running, unfinished),) = stack.query(
            "SELECT count(*) FILTER (WHERE status = 'running'), "
            "count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'canceled')) "
            "FROM jobs_job WHERE owner_id = %s",
            (user_id,),
        )
        peak = max(peak, running)
        return unfinished == 0

    wait_for(all_finished, timeout=240, what="the limited user's jobs to finish", interval=0.02)

    assert peak == MAX_RUNNING, f"{peak} running at once; the limit is {MAX_RUNNING}"
    statuses = check_invariants(stack, ids, before)
    assert set(statuses) == {"succeeded", "failed"}, "the budget ran out partway through"
    failures = stack.query(
        "SELECT DISTINCT error_code FROM jobs_job WHERE owner_id = %s AND status = 'failed'",
        (user_id,),
    )
    assert failures == [("budget_exceeded",)]
    ((spent, reserved),) = stack.query(
        "SELECT spent_usd, reserved_usd FROM jobs_budgetledger WHERE user_id = %s", (user_id,)
    )
    ((calls_cost,),) = stack.query(
        "SELECT sum(cost_usd) FROM jobs_providercall WHERE job_id = ANY(%s::uuid[])", (ids,)
    )
    assert spent <= BUDGET, f"spent {spent} of a {BUDGET} budget"
    assert (reserved, spent) == (0, calls_cost), "every reservation settled at its real cost"
