"""h: scenario c's added latency of single jobs, submitted one at a time while another user's
5,000-item batch runs, p50 and p99, against the same on the idle system in the same run.

Two deployments, each measured idle and under the batch: the platform's (docker-compose.yml,
`make demo`), a worker for single jobs and one for batch items at the lowest CPU priority
(nice 19); and one worker taking both queues, where batch items wait behind every single job
on the broker (jobs/dispatch.py) but share the worker's process, and its CPU, with them.
Both run with AIJOBS_BATCH_MAX_IN_FLIGHT at half a worker's slots, as docker-compose.yml and
`make demo` set it (--batch-max-in-flight sets another; 0 for none): while single jobs are
about, the batch keeps out of the other half, and the machine less busy with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from devtools.bench.c_latency import LATENCY_WARMUP_JOBS, SEGMENTS, sequential_latencies
from devtools.bench.load import ApiClient
from devtools.bench.scenario import Row, Scenario, median, percentile, verdict
from devtools.bench.session import (
    BATCH_QUEUE,
    JOB_POLL,
    QUEUE,
    Options,
    Session,
    api_token,
    say,
)
from devtools.bench.stack import Simulator, Web, start_simulator, start_web, stopping
from devtools.demo import BATCH_WORKER_NICE

TARGET = 2.0  # p99 under the batch, in times the idle p99
BATCH_OWNER = "bench-batch"


@dataclass(frozen=True)
class Deployment:
    name: str
    # The queues of each worker, and its nice value.
    workers: tuple[tuple[tuple[str, ...], int], ...]


SPLIT = Deployment("a worker per queue", (((QUEUE,), 0), ((BATCH_QUEUE,), BATCH_WORKER_NICE)))
SHARED = Deployment("one worker for both", (((QUEUE, BATCH_QUEUE), 0),))
DEPLOYMENTS = (SPLIT, SHARED)


@dataclass(frozen=True)
class FairnessRun:
    deployment: str
    idle_ms: list[float]
    busy_ms: list[float]
    batch_items: int
    batch_max_in_flight: int  # 0: no cap
    # Batch items not finished when the last single job was: 0 means the batch ended early,
    # and some single jobs ran on an idle system.
    batch_items_left: int

    def p(self, q: float) -> tuple[float, float]:
        """The q-th percentile of the added latency: under the batch, and idle."""
        return percentile(self.busy_ms, q), percentile(self.idle_ms, q)

    @property
    def ratio(self) -> float:
        busy, idle = self.p(99)
        return busy / idle


def run(session: Session, profiles: dict[str, str]) -> list[FairnessRun]:
    sim = start_simulator(session.processes, session.child_env(), session.options.latency_ms)
    with stopping(session.processes, sim.child):
        web = start_web(session.processes, session.child_env(sim))
        with stopping(session.processes, web.child):
            other = api_token(session.child_env(), BATCH_OWNER)
            return [
                fairness_run(session, sim, web, other, deployment)
                for _ in range(session.options.runs)
                for deployment in DEPLOYMENTS
            ]


def fairness_run(
    session: Session, sim: Simulator, web: Web, other: str, deployment: Deployment
) -> FairnessRun:
    """c idle, then c again once the other user's batch is under way, on the deployment."""
    options = session.options
    client = ApiClient(web.url, session.token)
    session.fresh_run(sim)
    cap = cap_of(options)
    with contextlib.ExitStack() as stack:
        for index, (queues, nice) in enumerate(deployment.workers):
            worker = session.worker(
                sim,
                options.pool,
                options.concurrency,
                index,
                queues,
                nice,
                AIJOBS_BATCH_MAX_IN_FLIGHT=str(cap),
            )
            stack.enter_context(stopping(session.processes, worker.child))
        sequential_latencies(session, client, LATENCY_WARMUP_JOBS)
        idle = sequential_latencies(session, client, options.latency_jobs)
        session.submit_batch(web, options.batch_items, token=other)
        session.wait(
            lambda: session.table.batch_items(finished=True) >= options.concurrency,
            "the batch to be under way",
            JOB_POLL,
        )
        busy = sequential_latencies(session, client, options.latency_jobs)
        left = session.table.batch_items(finished=False)
    run = FairnessRun(
        deployment.name,
        [job.added_ms for job in idle],
        [job.added_ms for job in busy],
        options.batch_items,
        cap,
        left,
    )
    (busy50, idle50), (busy99, idle99) = run.p(50), run.p(99)
    segments = ", ".join(
        f"{name} {median([job.segments_ms[i] for job in busy]):.1f}"
        f" ({median([job.segments_ms[i] for job in idle]):.1f})"
        for i, name in enumerate(SEGMENTS)
    )
    say(
        f"h, {deployment.name}: added p50 {busy50:.1f} ms under the batch ({idle50:.1f} idle), "
        f"p99 {busy99:.1f} ms ({idle99:.1f} idle), {run.ratio:.2f}x; batch items left at the "
        f"end: {left}; medians under the batch (idle), ms: {segments}"
    )
    return run


def rows(options: Options, runs: list[FairnessRun]) -> list[Row]:
    return [
        row
        for deployment in DEPLOYMENTS
        for row in deployment_rows(options, deployment, of(runs, deployment))
    ]


def of(runs: list[FairnessRun], deployment: Deployment) -> list[FairnessRun]:
    return [run for run in runs if run.deployment == deployment.name]


def cap_of(options: Options) -> int:
    """AIJOBS_BATCH_MAX_IN_FLIGHT: as given, or half a worker's slots, as docker-compose.yml and
    `make demo` set it."""
    given = options.batch_max_in_flight
    return options.concurrency // 2 if given is None else given


def deployment_rows(options: Options, deployment: Deployment, runs: list[FairnessRun]) -> list[Row]:
    if not runs:
        return []
    cap = cap_of(options)
    slots = (
        f"at most {cap} of {options.concurrency} slots with single jobs about" if cap else "no cap"
    )
    what = (
        f"{options.latency_jobs} sequential jobs @ {options.latency_ms} ms, "
        f"{deployment.name}, batch {slots}"
    )
    early = sum(r.batch_items_left == 0 for r in runs)
    note = f" ({early} of {len(runs)} runs outlasted the batch)" if early else ""
    found = []
    for name, q in (("p50", 50), ("p99", 99)):
        busy = median([r.p(q)[0] for r in runs])
        idle = median([r.p(q)[1] for r in runs])
        ratio = median([r.p(q)[0] / r.p(q)[1] for r in runs])
        target = q == 99
        found.append(
            Row(
                f"h. added latency {name} under a {options.batch_items}-item batch, {what}{note}",
                f"{busy:.1f} ms",
                f"idle: {idle:.1f} ms",
                f"{ratio:.2f}x",
                f"<= {TARGET:g}x" if target else "",
                verdict(ratio <= TARGET) if target else "",
                "",
                ", ".join(f"{r.p(q)[0]:.1f}/{r.p(q)[1]:.1f}" for r in runs),
            )
        )
    return found


def fairness_json(run: FairnessRun) -> dict[str, Any]:
    """Percentiles rather than every sample, as c's runs."""
    (busy50, idle50), (busy99, idle99) = run.p(50), run.p(99)
    return {
        "deployment": run.deployment,
        "jobs": len(run.busy_ms),
        "batch_items": run.batch_items,
        "batch_max_in_flight": run.batch_max_in_flight,
        "batch_items_left": run.batch_items_left,
        "added_p50_ms_under_batch": round(busy50, 2),
        "added_p99_ms_under_batch": round(busy99, 2),
        "added_p50_ms_idle": round(idle50, 2),
        "added_p99_ms_idle": round(idle99, 2),
        "ratio_p99": round(run.ratio, 3),
    }


def headline(options: Options, runs: list[FairnessRun]) -> dict[str, Any]:
    """The platform's deployment's figures."""
    runs = of(runs, SPLIT)
    return {
        "interactive_added_p99_ms_under_batch": (
            round(median([r.p(99)[0] for r in runs]), 2) if runs else None
        ),
        "interactive_added_p99_ms_idle": round(median([r.p(99)[1] for r in runs]), 2)
        if runs
        else None,
    }


SCENARIO = Scenario(
    key="h", letters=("h",), run=run, rows=rows, headline=headline, run_json=fairness_json
)
