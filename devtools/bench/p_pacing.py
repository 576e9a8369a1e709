"""p: how close the fleet paces to a provider rate limit: a burst of jobs larger than the limit,
and the rate at which their calls went out against it.

`make test` asserts only the guarantee (never faster than the limit, tests/chaos/
test_rate_limits.py); how near the limit a busy machine gets is this floor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devtools.bench.scenario import Row, Scenario, median, run_json, verdict
from devtools.bench.session import Options, Outcome, Session, say, wait_for_jobs
from devtools.bench.stack import Simulator, Web, start_simulator, start_web, stopping

RPM = 600  # ten a second: a run of seconds, not minutes
JOBS = 150
BURST = RPM // 60  # one second's worth may go at once; the rate counts the calls after it
FLOOR = 0.85  # of the limit
CEILING = 1.03  # the guarantee, with room for the clocks
LATENCY_MS = 100
CONCURRENCY = 32


@dataclass(frozen=True)
class PacingRun:
    rate: float  # one model's calls per second after the first second's burst
    outcome: Outcome

    @property
    def share(self) -> float:
        return self.rate / (RPM / 60)


def run(session: Session, profiles: dict[str, str]) -> list[PacingRun]:
    limits = {"AIJOBS_PROVIDER_LIMITS": json.dumps({"*": {"rpm": RPM}})}
    web = start_web(session.processes, session.child_env(**limits), name="web-p")
    sim = start_simulator(session.processes, session.child_env(), LATENCY_MS)
    with stopping(session.processes, web.child), stopping(session.processes, sim.child):
        return [pacing_run(session, sim, web, limits) for _ in range(session.options.runs)]


def pacing_run(session: Session, sim: Simulator, web: Web, limits: dict[str, str]) -> PacingRun:
    session.fresh_run(sim)
    session.submit(web, JOBS)
    worker = session.worker(sim, session.options.pool, CONCURRENCY, **limits)
    with stopping(session.processes, worker.child):
        outcome = wait_for_jobs(session, JOBS, timeout=60 + 2 * JOBS * 60 / RPM)
    # The limit holds per model; the jobs' kinds use two, so the busier one is measured.
    busiest = max(session.table.call_times().values(), key=len)
    steady = busiest[BURST:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    say(f"p: {rate:.2f} calls/s against {RPM / 60:.0f}/s per model ({rate * 60 / RPM:.0%})")
    return PacingRun(rate, outcome)


def rows(options: Options, runs: list[PacingRun]) -> list[Row]:
    if not runs:
        return []
    share = median([r.share for r in runs])
    return [
        Row(
            f"p. calls/s of one model paced under a {RPM / 60:.0f}/s limit, {JOBS}-job burst",
            f"{median([r.rate for r in runs]):.2f}",
            f"limit {RPM / 60:.0f}/s",
            f"{share:.1%}",
            f">= {FLOOR:.0%}, <= {CEILING:.0%}",
            verdict(FLOOR <= share <= CEILING),
            runs=", ".join(f"{r.share:.0%}" for r in runs),
        )
    ]


def headline(options: Options, runs: list[PacingRun]) -> dict[str, Any]:
    share = round(median([r.share for r in runs]), 4) if runs else None
    return {"paced_share_of_rate_limit": share}


SCENARIO = Scenario(
    key="p", letters=("p",), run=run, rows=rows, headline=headline, run_json=run_json
)
