"""g: items/s of a 5,000-item batch at zero simulated latency, from its POST /batches to its last
item's finish, against scenario a's jobs/s (one POST /jobs each) in the same run, the jobs of
the batch's kind and parameters: a's own jobs take the kinds in turn, whose answers are half as
long on average as the batch's summaries, and the worker's CPU goes with the answer's length.

A batch skips the per-job HTTP request and submission; its items are published instead by the
dispatcher's rounds, run by the workers (jobs/dispatch.py, workers/rounds.py).
"""

from __future__ import annotations

import os
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
# The worker counts each run measures: one, as a runs it; and one per core. One worker process
# runs Python on one core at a time, so with one a batch can only match the single jobs, whose
# HTTP requests and submissions take the web process's core; with one per core the workers
# can use the CPU a batch leaves them.
WORKER_COUNTS = (1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BatchRun:
    workers: int
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
            return [
                batch_run(session, sim, web, index, workers)
                for index in range(session.options.runs)
                for workers in sorted(set(WORKER_COUNTS))
            ]


def batch_run(session: Session, sim: Simulator, web: Web, index: int, workers: int) -> BatchRun:
    items, jobs = session.options.batch_items, session.options.jobs

    # Alternate which goes first, so a drift of the shared machine favours neither.
    if index % 2 == 0:
        batch_rate, outcome, usage = batch_rate_of(session, sim, web, items, workers)
        single_rate, _, single_usage = _single_rate_of(session, sim, web, jobs, workers)
    else:
        single_rate, _, single_usage = _single_rate_of(session, sim, web, jobs, workers)
        batch_rate, outcome, usage = batch_rate_of(session, sim, web, items, workers)
    run = BatchRun(workers, batch_rate, single_rate, items, jobs, outcome, usage, single_usage)
    say(
        f"g run {index + 1}, {_workers(workers)}: batch {batch_rate:.0f} items/s, single jobs "
        f"{single_rate:.0f} jobs/s, ratio {run.ratio:.2f}x, {outcome.succeeded}/{items} "
        f"succeeded, sim {sim_note(usage)}"
    )
    return run


def _single_rate_of(
    session: Session, sim: Simulator, web: Web, jobs: int, workers: int
) -> tuple[float, Outcome, Usage]:
    return platform_rate_of(session, sim, web, jobs, kind=BATCH_KIND, workers=workers)


def _workers(count: int) -> str:
    return "1 worker" if count == 1 else f"{count} workers"


def batch_rate_of(
    session: Session, sim: Simulator, web: Web, items: int, workers: int
) -> tuple[float, Outcome, Usage]:
    """Items per second from the batch's POST to its last item's finish."""
    session.fresh_run(sim)
    with session.workers(sim, workers) as pids:
        meter = session.meter(sim, web=web.child.pid, **pids)
        started = session.submit_batch(web, items)
        outcome = wait_for_jobs(session, items, timeout=60 + items / 10)
        usage = meter.stop()
    _, last = session.table.window()
    return outcome.succeeded / (last - started), outcome, usage


def rows(options: Options, runs: list[BatchRun]) -> list[Row]:
    return [_row(options, count, of) for count, of in _by_workers(runs).items()]


def _by_workers(runs: list[BatchRun]) -> dict[int, list[BatchRun]]:
    grouped: dict[int, list[BatchRun]] = {}
    for run in runs:
        grouped.setdefault(run.workers, []).append(run)
    return grouped


def _row(options: Options, workers: int, runs: list[BatchRun]) -> Row:
    ratio = median([r.ratio for r in runs])
    return Row(
        f"g. batch items/s, {options.batch_items} items, {_workers(workers)}, "
        f"{options.pool} c{options.concurrency}",
        f"{median([r.batch_rate for r in runs]):.0f}",
        f"a, {BATCH_KIND.NAME}: {median([r.single_rate for r in runs]):.0f} jobs/s",
        f"{ratio:.2f}x",
        f">= {TARGET:g}x",
        verdict(ratio >= TARGET),
        sim_median([r.usage for r in runs]),
        ", ".join(f"{r.batch_rate:.0f}/{r.single_rate:.0f}" for r in runs),
    )


def headline(options: Options, runs: list[BatchRun]) -> dict[str, Any]:
    """a's worker count gives the keys the issue names; a worker per core its own."""
    grouped = _by_workers(runs)
    one, per_core = grouped.get(1, []), grouped.get(max(WORKER_COUNTS), [])
    return {
        "batch_items_per_s": round(median([r.batch_rate for r in one]), 1) if one else None,
        "batch_vs_single_ratio": round(median([r.ratio for r in one]), 3) if one else None,
        "batch_vs_single_ratio_worker_per_core": (
            round(median([r.ratio for r in per_core]), 3) if per_core else None
        ),
    }


SCENARIO = Scenario(
    key="g",
    letters=("g",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, ratio=r.ratio),
)
