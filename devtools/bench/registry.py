"""The scenarios of the bench, in the order they run and report.

Adding one: a module like its siblings defining SCENARIO, listed here; nothing else changes.
"""

from __future__ import annotations

from devtools.bench import (
    a_overhead,
    b_littles_law,
    b_sdk_floor,
    c_latency,
    d_status,
    f_batch_accept,
    g_batch_throughput,
    h_fairness,
    i_streams,
    j_longpoll,
    p_pacing,
)
from devtools.bench.scenario import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    a_overhead.SCENARIO,
    b_littles_law.SCENARIO,
    b_sdk_floor.SCENARIO,
    c_latency.SCENARIO,
    d_status.SCENARIO,
    f_batch_accept.SCENARIO,
    g_batch_throughput.SCENARIO,
    h_fairness.SCENARIO,
    i_streams.SCENARIO,
    j_longpoll.SCENARIO,
    p_pacing.SCENARIO,
)
LETTERS = tuple(sorted({letter for scenario in SCENARIOS for letter in scenario.letters}))
