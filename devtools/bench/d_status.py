"""d: GET /api/v1/jobs/{id} requests/s and p99 against a constant Django view, same server (the
ASGI one), and the same GET on the WSGI server the app ran on before, beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from devtools.bench.load import LoadResult, http_load
from devtools.bench.profiling import profile_files, recording
from devtools.bench.scenario import (
    Row,
    Scenario,
    median,
    run_json,
    verdict,
)
from devtools.bench.session import Options, Session, Usage, say, wait_for_jobs
from devtools.bench.stack import (
    BenchError,
    Simulator,
    Web,
    start_simulator,
    start_web,
    stopping,
)

TARGET = 0.60  # of the constant view's rate
STATUS_JOBS = 100
STATUS_WARMUP_SECONDS = 2.0


@dataclass(frozen=True)
class Load:
    """One load run on the web server: its result and the CPU it cost."""

    result: LoadResult
    usage: Usage

    def cpu_ms_per_request(self, name: str) -> float:
        return 1000 * self.usage.cpu.get(name, 0.0) / max(self.result.requests, 1)


# Runs one load on the server: ("status" or "baseline", seconds) -> what it did and cost.
Loader = Callable[[str, float], Load]


@dataclass(frozen=True)
class StatusRun:
    status: Load
    baseline: Load
    wsgi_rps: float = 0.0  # the same GET on the WSGI server (gthread), same run

    @property
    def ratio(self) -> float:
        return self.status.result.rps / self.baseline.result.rps


def run(session: Session, profiles: dict[str, str]) -> list[StatusRun]:
    sim = start_simulator(session.processes, session.child_env(), latency_ms=0)
    with stopping(session.processes, sim.child):
        web = start_web(session.processes, session.child_env(sim))
        with stopping(session.processes, web.child):
            paths = [f"/api/v1/jobs/{job_id}" for job_id in finished_jobs(session, sim, web)]
            session.processes.stop(sim.child)
            load = status_loader(session, web, paths)
            load("baseline", STATUS_WARMUP_SECONDS)
            load("status", STATUS_WARMUP_SECONDS)
            seconds = session.options.status_seconds
            runs = [status_run(load, index, seconds) for index in range(session.options.runs)]
            if session.options.profile:
                with recording(session.processes, web.child.pid, "web-d", subprocesses=True):
                    load("status", session.options.status_seconds)
                profiles.update(profile_files("web-d"))
        return beside_wsgi(session, paths, runs)


def beside_wsgi(session: Session, paths: list[str], runs: list[StatusRun]) -> list[StatusRun]:
    """Each run with the status GET's rate on the WSGI server (gunicorn gthread) beside it."""
    web = start_web(session.processes, session.child_env(), name="web-d-wsgi", wsgi=True)
    with stopping(session.processes, web.child):
        load = status_loader(session, web, paths)
        load("status", STATUS_WARMUP_SECONDS)
        seconds = session.options.status_seconds
        wsgi = [load("status", seconds).result.rps for _ in runs]
    say(f"d: the same GET on the WSGI server: {', '.join(f'{rps:.0f}' for rps in wsgi)} req/s")
    return [replace(run, wsgi_rps=rps) for run, rps in zip(runs, wsgi, strict=True)]


def finished_jobs(session: Session, sim: Simulator, web: Web) -> list[str]:
    """STATUS_JOBS succeeded jobs to poll (their JSON carries a result, as most polls see)."""
    session.fresh_run(sim)
    ids = session.submit(web, STATUS_JOBS)
    worker = session.worker(sim, session.options.pool, session.options.concurrency)
    with stopping(session.processes, worker.child):
        outcome = wait_for_jobs(session, STATUS_JOBS, timeout=120)
    if outcome.succeeded != STATUS_JOBS:
        raise BenchError(f"only {outcome.succeeded} of {STATUS_JOBS} jobs for d succeeded")
    return ids


def status_loader(session: Session, web: Web, paths: list[str]) -> Loader:
    headers = {"Authorization": f"Bearer {session.token}"}
    targets = {"status": paths, "baseline": ["/bench/constant"]}

    def load(target: str, seconds: float) -> Load:
        meter = session.meter(None, web=web.child.pid)
        result = http_load(
            web.url,
            targets[target],
            headers,
            connections=session.options.connections,
            seconds=seconds,
        )
        if result.errors:
            raise BenchError(f"{result.errors} failed requests in the {target} load")
        return Load(result, meter.stop())

    return load


def status_run(load: Loader, index: int, seconds: float) -> StatusRun:
    order = ("baseline", "status") if index % 2 == 0 else ("status", "baseline")
    results = {target: load(target, seconds) for target in order}
    run = StatusRun(results["status"], results["baseline"])
    status, baseline = run.status, run.baseline
    say(
        f"d run {index + 1}: status {status.result.rps:.0f} req/s "
        f"(p99 {status.result.p99_ms:.1f} ms, web CPU {status.cpu_ms_per_request('web'):.2f} "
        f"ms/req, postgres {status.cpu_ms_per_request('postgres'):.2f}), constant view "
        f"{baseline.result.rps:.0f} req/s (p99 {baseline.result.p99_ms:.1f} ms, web CPU "
        f"{baseline.cpu_ms_per_request('web'):.2f} ms/req), ratio {run.ratio:.0%}"
    )
    return run


def rows(options: Options, runs: list[StatusRun]) -> list[Row]:
    if not runs:
        return []
    connections = options.connections
    ratio = median([r.ratio for r in runs])
    status = [r.status.result for r in runs]
    baseline = [r.baseline.result for r in runs]
    return [
        Row(
            f"d. GET /jobs/{{id}} req/s, {connections} connections ({status[0].generator})",
            f"{median([r.rps for r in status]):.0f}",
            f"constant view {median([r.rps for r in baseline]):.0f} req/s",
            f"{ratio:.1%}",
            f">= {TARGET:.0%}",
            verdict(ratio >= TARGET),
            "idle (not in the path)",
            ", ".join(f"{s.rps:.0f}/{b.rps:.0f}" for s, b in zip(status, baseline, strict=True)),
        ),
        Row(
            "d. GET /jobs/{id} req/s, ASGI (uvicorn workers) against WSGI (gthread)",
            f"{median([r.rps for r in status]):.0f}",
            f"WSGI {median([r.wsgi_rps for r in runs]):.0f} req/s",
            f"{median([r.status.result.rps / r.wsgi_rps for r in runs]):.1%}",
            runs=", ".join(f"{r.status.result.rps:.0f}/{r.wsgi_rps:.0f}" for r in runs),
        ),
        Row(
            "d. GET /jobs/{id} p99 under that load",
            f"{median([r.p99_ms for r in status]):.1f} ms",
            f"constant view {median([r.p99_ms for r in baseline]):.1f} ms",
            runs=", ".join(f"{r.p99_ms:.1f}" for r in status),
        ),
    ]


def cpu_lines(runs: list[StatusRun]) -> list[str]:
    lines = ["CPU ms per request in d (median of runs):"]
    for label, loads in (
        ("GET /jobs/{id}", [r.status for r in runs]),
        ("constant view", [r.baseline for r in runs]),
    ):
        web = median([load.cpu_ms_per_request("web") for load in loads])
        postgres = median([load.cpu_ms_per_request("postgres") for load in loads])
        lines.append(f"  {label}: web {web:.2f}, postgres {postgres:.2f}")
    return lines


def headline(options: Options, runs: list[StatusRun]) -> dict[str, Any]:
    return {
        "status_rps": round(median([r.status.result.rps for r in runs]), 1) if runs else None,
        "bare_django_rps": round(median([r.baseline.result.rps for r in runs]), 1)
        if runs
        else None,
        "status_ratio": round(median([r.ratio for r in runs]), 4) if runs else None,
        "status_rps_asgi": round(median([r.status.result.rps for r in runs]), 1) if runs else None,
        "status_rps_wsgi": round(median([r.wsgi_rps for r in runs]), 1) if runs else None,
    }


SCENARIO = Scenario(
    key="d",
    letters=("d",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, ratio=r.ratio),
    cpu_lines=cpu_lines,
)
