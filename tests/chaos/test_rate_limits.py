"""The fleet keeps to the provider's rate limit: a burst larger than the limit is spread out,
and the simulator, holding the same limit, never has to answer 429."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.chaos.harness import Stack, check_invariants

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RPM = 600  # ten a second: a test of seconds, not minutes
JOBS = 150
BURST = RPM // 60  # one second's worth may go at once
# A call is stamped when its row is written, a moment after the limiter let it go; that moment
# varies with the worker's load (threads waiting for the interpreter), so stamps can bunch by
# up to that much. One call of slack (100 ms) was exceeded by 0.3 ms on a machine running at
# half speed; two (200 ms) still fail any limiter that lets more than the limit through.
STAMP_LAG_SECONDS = 0.2


@pytest.fixture(scope="module")
def stack():
    limits = json.dumps({"*": {"rpm": RPM}})
    stack = Stack.start(sim_args=("--rpm", str(RPM)), AIJOBS_PROVIDER_LIMITS=limits)
    stack.start_worker()
    stack.start_worker()
    yield stack
    stack.stop()


def test_a_burst_over_the_limit_never_goes_faster_than_the_limit(stack, record_property):
    before = stack.simulator.stats()
    run = uuid.uuid4().hex[:8]
    ids = stack.submit_many([f"Rate run {run}, job {i}. A short text." for i in range(JOBS)])

    stack.wait_all_terminal(ids, timeout=120)

    assert check_invariants(stack, ids, before["total"]) == {"succeeded": JOBS}
    after = stack.simulator.stats()
    assert after["by_outcome"]["rate_limited"] == before["by_outcome"]["rate_limited"]
    sent = [float(row[0]) for row in stack.query(
        "SELECT extract(epoch FROM created_at) FROM jobs_providercall "
        "WHERE job_id = ANY(%s::uuid[]) ORDER BY created_at",
        (ids,),
    )]  # fmt: skip
    steady = sent[BURST:]
    record_property("requests_per_second", round((len(steady) - 1) / (steady[-1] - steady[0]), 2))
    # The guarantee, as the limiter (GCRA) gives it: in any stretch of time, at most the
    # limit's rate times its length plus one burst. A slowed machine may bunch calls that
    # waited (a burst after a stall is allowed), but never more than that. How close to the
    # limit the fleet gets is a timing floor, checked by `make bench` (scenario p).
    rate = RPM / 60
    worst = max(
        (j - i + 1) - rate * (sent[j] - sent[i] + STAMP_LAG_SECONDS)
        for i in range(len(sent))
        for j in range(i, len(sent))
    )
    assert worst <= BURST, (
        f"{worst:.1f} calls beyond {rate:.0f}/s in some stretch (a burst is {BURST})"
    )
