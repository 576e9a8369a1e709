"""Timing floors, waiting to move into `make bench` (devtools/bench.py; not imported by the suite).

How fast something goes at least depends on the machine and on what else runs on
it, so a floor fails a correct build on a busy CI box: `make test` keeps only the
guarantees (never faster than the rate limit; every request answered), and the
bench, which owns the machine while it runs, checks these.
"""

from __future__ import annotations

# The fleet paces a burst to within this share of the provider's rate limit (the
# guarantee, tests/chaos/test_rate_limits.py, is the other side: never above it).
PACED_RATE_FLOOR = 0.85
# Of 100 slow requests sent at once, the simulator holds at least this many in flight
# (tests/devtools/test_claude_sim.py::test_serves_a_hundred_slow_requests_concurrently).
SIM_IN_FLIGHT_FLOOR = 50


def timing_floor_shortfalls(
    *, paced_rate: float, rate_limit: float, sim_max_in_flight: int
) -> list[str]:
    """What fell short of its floor, as lines for the bench's table (empty: all met)."""
    shortfalls = []
    if paced_rate < rate_limit * PACED_RATE_FLOOR:
        floor = rate_limit * PACED_RATE_FLOOR
        shortfalls.append(f"paced {paced_rate:.2f}/s, under the floor of {floor:.2f}/s")
    if sim_max_in_flight < SIM_IN_FLIGHT_FLOOR:
        shortfalls.append(
            f"simulator held {sim_max_in_flight} requests in flight, under {SIM_IN_FLIGHT_FLOOR}"
        )
    return shortfalls
