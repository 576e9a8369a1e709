"""a: jobs/s end to end (HTTP submit -> finished in Postgres) at zero simulated latency,
against bare Celery (a no-op task, same broker and worker settings) in the same run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from devtools.bench.bare import NOOP_TASK
from devtools.bench.load import in_parallel
from devtools.bench.profiling import profile_files, recording
from devtools.bench.scenario import (
    Row,
    Scenario,
    median,
    run_json,
    sim_median,
    sim_note,
    verdict,
)
from devtools.bench.session import (
    BARE_QUEUE,
    BROKER_POLL,
    IDLE_RECHECK,
    Options,
    Outcome,
    Session,
    Usage,
    broker_drained,
    say,
    wait_for_jobs,
)
from devtools.bench.stack import (
    Simulator,
    Web,
    start_simulator,
    start_web,
    start_worker,
    stopping,
    wait_ready,
)

TARGET = 0.25  # of bare Celery's rate


@dataclass(frozen=True)
class OverheadRun:
    platform_rate: float
    bare_rate: float
    jobs: int
    outcome: Outcome
    platform_usage: Usage
    bare_usage: Usage

    @property
    def ratio(self) -> float:
        return self.platform_rate / self.bare_rate


def run(session: Session, profiles: dict[str, str]) -> list[OverheadRun]:
    env = session.child_env()
    sim = start_simulator(session.processes, env, latency_ms=0)
    with stopping(session.processes, sim.child):
        web = start_web(session.processes, session.child_env(sim))
        with stopping(session.processes, web.child):
            runs = [overhead_run(session, sim, web, index) for index in range(session.options.runs)]
            if session.options.profile:
                profiles.update(profile_platform(session, sim, web))
    return runs


def overhead_run(session: Session, sim: Simulator, web: Web, index: int) -> OverheadRun:
    jobs = session.options.jobs
    # Alternate which goes first, so a drift of the shared machine favours neither.
    if index % 2 == 0:
        bare_rate, bare_usage = bare_celery_rate(session, jobs)
        platform_rate, outcome, usage = platform_rate_of(session, sim, web, jobs)
    else:
        platform_rate, outcome, usage = platform_rate_of(session, sim, web, jobs)
        bare_rate, bare_usage = bare_celery_rate(session, jobs)
    run = OverheadRun(platform_rate, bare_rate, jobs, outcome, usage, bare_usage)
    say(
        f"a run {index + 1}: platform {platform_rate:.0f} jobs/s, bare Celery "
        f"{bare_rate:.0f} tasks/s, ratio {run.ratio:.1%}, sim {sim_note(usage)}"
    )
    return run


def bare_celery_rate(session: Session, tasks: int) -> tuple[float, Usage]:
    """No-op tasks per second from first send to an empty broker, sent from --clients threads."""
    options = session.options
    session.broker.reset()
    worker = start_worker(
        session.processes,
        session.child_env(),
        app="devtools.bench.bare",
        queues=(BARE_QUEUE,),
        pool=options.pool,
        concurrency=options.concurrency,
    )
    with stopping(session.processes, worker.child):
        wait_ready(worker, session.broker)
        meter = session.meter(None, worker=worker.child.pid)
        started = time.time()
        send = session.broker.app.send_task
        in_parallel(tasks, options.clients, lambda i: send(NOOP_TASK, args=[i], queue=BARE_QUEUE))
        session.wait(lambda: broker_drained(session.broker), "the bare tasks", BROKER_POLL)
        finished = time.time() - IDLE_RECHECK
        usage = meter.stop()
    return tasks / (finished - started), usage


# Wraps the measured span of a run, given its worker and web server (a profiler does).
Recorder = Callable[[int, Web], contextlib.AbstractContextManager[None]]


def platform_rate_of(
    session: Session,
    sim: Simulator,
    web: Web,
    jobs: int,
    recorder: Recorder | None = None,
    kind: ModuleType | None = None,
    workers: int = 1,
) -> tuple[float, Outcome, Usage]:
    """Jobs per second from the first POST to the last job's finished_at (the kinds in turn,
    or only `kind`), run by `workers` workers; `recorder` profiles the first and the web."""
    session.fresh_run(sim)
    with session.workers(sim, workers) as pids:
        profiled = recorder(pids["worker"], web) if recorder else contextlib.nullcontext()
        with profiled:
            meter = session.meter(sim, web=web.child.pid, **pids)
            started = time.time()
            session.submit(web, jobs, kind)
            outcome = wait_for_jobs(session, jobs, timeout=60 + jobs / 10)
            usage = meter.stop()
    _, last = session.table.window()
    return outcome.succeeded / (last - started), outcome, usage


def profile_platform(session: Session, sim: Simulator, web: Web) -> dict[str, str]:
    """One more run of a, with py-spy sampling the worker and the web server."""

    @contextlib.contextmanager
    def recorder(worker_pid: int, web: Web) -> Iterator[None]:
        with (
            recording(session.processes, worker_pid, "worker-a"),
            recording(session.processes, web.child.pid, "web-a", subprocesses=True),
        ):
            yield

    rate, _, _ = platform_rate_of(session, sim, web, session.options.jobs, recorder)
    say(f"a profiled run: {rate:.0f} jobs/s (slowed by the profiler; not a figure)")
    return profile_files("worker-a", "web-a")


def rows(options: Options, runs: list[OverheadRun]) -> list[Row]:
    if not runs:
        return []
    ratio = median([r.ratio for r in runs])
    return [
        Row(
            f"a. jobs/s end to end, {options.jobs} jobs, {options.pool} c{options.concurrency}",
            f"{median([r.platform_rate for r in runs]):.0f}",
            f"bare Celery {median([r.bare_rate for r in runs]):.0f} tasks/s",
            f"{ratio:.1%}",
            f">= {TARGET:.0%}",
            verdict(ratio >= TARGET),
            sim_median([r.platform_usage for r in runs]),
            ", ".join(f"{r.platform_rate:.0f}/{r.bare_rate:.0f}" for r in runs),
        )
    ]


def cpu_lines(runs: list[OverheadRun]) -> list[str]:
    lines = ["CPU ms per job in a (median of runs; 'machine' is both cores together):"]
    for label, per_run in (
        ("platform", [r.platform_usage.per_job_ms(r.jobs) for r in runs]),
        ("bare Celery", [r.bare_usage.per_job_ms(r.jobs) for r in runs]),
    ):
        keys = per_run[0].keys()
        parts = ", ".join(f"{key} {median([run[key] for run in per_run]):.2f}" for key in keys)
        lines.append(f"  {label}: {parts}")
    return lines


def headline(options: Options, runs: list[OverheadRun]) -> dict[str, Any]:
    return {
        "overhead_jobs_per_s": round(median([r.platform_rate for r in runs]), 1) if runs else None,
        "bare_celery_tasks_per_s": round(median([r.bare_rate for r in runs]), 1) if runs else None,
        "overhead_ratio": round(median([r.ratio for r in runs]), 4) if runs else None,
    }


SCENARIO = Scenario(
    key="a",
    letters=("a",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, ratio=r.ratio),
    cpu_lines=cpu_lines,
)
