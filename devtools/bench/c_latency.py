"""c: submit-to-finished time minus the simulated latency, sequential jobs, p50 and p99."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from devtools.bench.load import ApiClient, job_body
from devtools.bench.scenario import (
    Row,
    Scenario,
    median,
    percentile,
    sim_median,
    verdict,
)
from devtools.bench.session import Options, Session, Usage, say
from devtools.bench.stack import (
    Simulator,
    start_simulator,
    start_web,
    stopping,
)

TARGET_P50_MS = 15.0
TARGET_P99_MS = 50.0
LATENCY_WARMUP_JOBS = 10
LATENCY_POLL = 0.005  # s between looks at one job's row


# Where a job's added latency goes, from its row's timestamps (all on this machine's clock):
#   submit -> row: HTTP, auth, validation, up to the INSERT's created_at
#   row -> claim: commit, publish, broker, the worker's task start and DB connection, the claim
#   claim -> finish, less the provider call: reading the job, prompts, recording the call
#   provider call, less the simulated latency: the SDK and the simulator's own work
SEGMENTS = ("submit -> row", "row -> claim", "claim -> finish less call", "call less simulated")


@dataclass(frozen=True)
class LatencyRun:
    """Per job: finished_at (or the moment the driver saw it) - submit time - simulated latency."""

    added_ms: list[float]
    observed_ms: list[float]
    segments_ms: dict[str, list[float]]
    usage: Usage

    @property
    def p50(self) -> float:
        return percentile(self.added_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.added_ms, 99)


@dataclass(frozen=True)
class JobLatency:
    added_ms: float
    observed_ms: float
    segments_ms: tuple[float, ...]


def run(session: Session, profiles: dict[str, str]) -> list[LatencyRun]:
    options = session.options
    sim = start_simulator(session.processes, session.child_env(), options.latency_ms)
    with stopping(session.processes, sim.child):
        web = start_web(session.processes, session.child_env(sim))
        with stopping(session.processes, web.child):
            session.fresh_run(sim)
            worker = session.worker(sim, options.pool, options.concurrency)
            with stopping(session.processes, worker.child):
                client = ApiClient(web.url, session.token)
                sequential_latencies(session, client, LATENCY_WARMUP_JOBS)
                return [latency_run(session, client, sim) for _ in range(options.runs)]


def latency_run(session: Session, client: ApiClient, sim: Simulator) -> LatencyRun:
    meter = session.meter(sim)
    jobs = sequential_latencies(session, client, session.options.latency_jobs)
    segments = {name: [job.segments_ms[i] for job in jobs] for i, name in enumerate(SEGMENTS)}
    run = LatencyRun(
        [job.added_ms for job in jobs], [job.observed_ms for job in jobs], segments, meter.stop()
    )
    parts = ", ".join(f"{name} {median(values):.1f}" for name, values in segments.items())
    say(f"c: added p50 {run.p50:.1f} ms, p99 {run.p99:.1f} ms; medians (ms): {parts}")
    return run


def sequential_latencies(session: Session, client: ApiClient, count: int) -> list[JobLatency]:
    """Submit jobs one at a time, each once the one before has finished."""
    session.batches += 1
    tag = f"{os.getpid()}-{session.batches}"
    return [one_latency(session, client, job_body(index, tag)) for index in range(count)]


def one_latency(session: Session, client: ApiClient, body: dict[str, Any]) -> JobLatency:
    simulated = session.options.latency_ms / 1000
    submitted = time.time()
    job_id = client.submit(body)
    finished = session.wait(
        lambda: session.table.finished_at(job_id), "a job to finish", LATENCY_POLL
    )
    seen = time.time()
    created, started, _, calls = session.table.timeline(job_id)
    segments = (created - submitted, started - created, finished - started - calls)
    return JobLatency(
        added_ms=1000 * (finished - submitted - simulated),
        observed_ms=1000 * (seen - submitted - simulated),
        segments_ms=tuple(1000 * value for value in (*segments, calls - simulated)),
    )


def rows(options: Options, runs: list[LatencyRun]) -> list[Row]:
    if not runs:
        return []
    sim = sim_median([r.usage for r in runs])
    what = f"{options.latency_jobs} sequential jobs @ {options.latency_ms} ms"
    rows = []
    for name, q, target in (("p50", 50, TARGET_P50_MS), ("p99", 99, TARGET_P99_MS)):
        values = [percentile(r.added_ms, q) for r in runs]
        observed = median([percentile(r.observed_ms, q) for r in runs])
        rows.append(
            Row(
                f"c. added latency {name}, {what}",
                f"{median(values):.1f} ms",
                f"seen by polling: {observed:.1f} ms",
                "",
                f"< {target:g} ms",
                verdict(median(values) < target),
                sim,
                ", ".join(f"{v:.1f}" for v in values),
            )
        )
    return rows


def latency_json(run: LatencyRun) -> dict[str, Any]:
    """Percentiles rather than every sample, to keep the file readable."""
    observed = run.observed_ms
    return {
        "jobs": len(run.added_ms),
        "added_p50_ms": round(run.p50, 2),
        "added_p90_ms": round(percentile(run.added_ms, 90), 2),
        "added_p99_ms": round(run.p99, 2),
        "added_max_ms": round(max(run.added_ms), 2),
        "observed_p50_ms": round(percentile(observed, 50), 2),
        "observed_p99_ms": round(percentile(observed, 99), 2),
        "segments_p50_ms": {k: round(percentile(v, 50), 2) for k, v in run.segments_ms.items()},
        "segments_p99_ms": {k: round(percentile(v, 99), 2) for k, v in run.segments_ms.items()},
        "usage": asdict(run.usage),
    }


def headline(options: Options, runs: list[LatencyRun]) -> dict[str, Any]:
    return {
        "added_latency_p50_ms": round(median([r.p50 for r in runs]), 2) if runs else None,
        "added_latency_p99_ms": round(median([r.p99 for r in runs]), 2) if runs else None,
    }


SCENARIO = Scenario(
    key="c", letters=("c",), run=run, rows=rows, headline=headline, run_json=latency_json
)
