"""g: items/s of a 5,000-item batch at zero simulated latency, from its POST /batches to its last
item's finish, against scenario a's jobs/s (one POST /jobs each) in the same run, the jobs of
the batch's kind and parameters: a's own jobs take the kinds in turn, whose answers are half as
long on average as the batch's summaries, and the worker's CPU goes with the answer's length.

A batch skips the per-job HTTP request and submission; its items are published instead by the
dispatcher's rounds, run by the workers (jobs/dispatch.py, workers/rounds.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devtools.bench.a_overhead import platform_rate_of
from devtools.bench.load import BATCH_KIND
from devtools.bench.scenario import (
    Row,
    Scenario,
    median,
    run_json,
    sim_median,
    sim_note,
    verdict,
)
from devtools.bench.session import Options, Outcome, Session, Usage, say, wait_for_jobs
from devtools.bench.stack import Simulator, Web, start_simulator, start_web, stopping

TARGET = 1.5  # times a's jobs/s


@dataclass(frozen=True)
class BatchRun:
    batch_rate: float
    single_rate: float
    items: int
    jobs: int
    outcome: Outcome
    usage: Usage
    single_usage: Usage

    @property
    def ratio(self) -> float:
        return self.batch_rate / self.single_rate


def run(session: Session, profiles: dict[str, str]) -> list[BatchRun]:
    sim = start_simulator(session.processes, session.child_env(), latency_ms=0)
    with stopping(session.processes, sim.child):
        web = start_web(session.processes, session.child_env(sim))
        with stopping(session.processes, web.child):
            return [batch_run(session, sim, web, index) for index in range(session.options.runs)]


def batch_run(session: Session, sim: Simulator, web: Web, index: int) -> BatchRun:
    items, jobs = session.options.batch_items, session.options.jobs
    # Alternate which goes first, so a drift of the shared machine favours neither.
    if index % 2 == 0:
        batch_rate, outcome, usage = batch_rate_of(session, sim, web, items)
        single_rate, _, single_usage = platform_rate_of(session, sim, web, jobs, kind=BATCH_KIND)
    else:
        single_rate, _, single_usage = platform_rate_of(session, sim, web, jobs, kind=BATCH_KIND)
        batch_rate, outcome, usage = batch_rate_of(session, sim, web, items)
    run = BatchRun(batch_rate, single_rate, items, jobs, outcome, usage, single_usage)
    say(
        f"g run {index + 1}: batch {batch_rate:.0f} items/s, single jobs {single_rate:.0f} "
        f"jobs/s, ratio {run.ratio:.2f}x, {outcome.succeeded}/{items} succeeded, "
        f"sim {sim_note(usage)}"
    )
    return run


def batch_rate_of(
    session: Session, sim: Simulator, web: Web, items: int
) -> tuple[float, Outcome, Usage]:
    """Items per second from the batch's POST to its last item's finish."""
    session.fresh_run(sim)
    options = session.options
    worker = session.worker(sim, options.pool, options.concurrency)
    with stopping(session.processes, worker.child):
        meter = session.meter(sim, web=web.child.pid, worker=worker.child.pid)
        started = session.submit_batch(web, items)
        outcome = wait_for_jobs(session, items, timeout=60 + items / 10)
        usage = meter.stop()
    _, last = session.table.window()
    return outcome.succeeded / (last - started), outcome, usage


def rows(options: Options, runs: list[BatchRun]) -> list[Row]:
    if not runs:
        return []
    ratio = median([r.ratio for r in runs])
    return [
        Row(
            f"g. batch items/s, {options.batch_items} items, {options.pool} c{options.concurrency}",
            f"{median([r.batch_rate for r in runs]):.0f}",
            f"a, {BATCH_KIND.NAME}: {median([r.single_rate for r in runs]):.0f} jobs/s",
            f"{ratio:.2f}x",
            f">= {TARGET:g}x",
            verdict(ratio >= TARGET),
            sim_median([r.usage for r in runs]),
            ", ".join(f"{r.batch_rate:.0f}/{r.single_rate:.0f}" for r in runs),
        )
    ]


def headline(options: Options, runs: list[BatchRun]) -> dict[str, Any]:
    return {
        "batch_items_per_s": round(median([r.batch_rate for r in runs]), 1) if runs else None,
        "batch_vs_single_ratio": round(median([r.ratio for r in runs]), 3) if runs else None,
    }


SCENARIO = Scenario(
    key="g",
    letters=("g",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, ratio=r.ratio),
)
