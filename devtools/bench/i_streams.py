"""i: 1,000 event streams held open by one web process: its RSS and CPU while it holds them,
and how long one published event takes to reach all of them (p50, p99)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from devtools.bench.scenario import Row, Scenario, median, percentile, run_json
from devtools.bench.session import Options, Session, say
from devtools.bench.stack import (
    ROOT,
    BenchError,
    start_web,
    stopping,
    tree_cpu_seconds,
    tree_rss_mb,
)
from devtools.bench.streams import hold

STREAMS = 1000
HOLD_SECONDS = 10.0
DELIVERY_TIMEOUT = 30.0
# Publishes one output event through jobs.events, printing the moment just before it
# (CLOCK_MONOTONIC is one clock for every process of the machine).
PUBLISH = (
    "import sys, time, django; django.setup(); from jobs.events import job_event_publish; "
    "print(time.monotonic(), flush=True); "
    "job_event_publish(sys.argv[1], 'output', {'text': 'hello', 'partial': None})"
)


@dataclass(frozen=True)
class StreamsRun:
    streams: int
    rss_mb: float
    cpu_percent: float
    delays_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.delays_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.delays_ms, 99)


def run(session: Session, profiles: dict[str, str]) -> list[StreamsRun]:
    web = start_web(session.processes, session.child_env(), name="web-i", workers=1)
    with stopping(session.processes, web.child):
        session.fresh_run()
        runs = []
        for _ in range(session.options.runs):
            [job_id] = session.submit(web, 1)
            runs.append(asyncio.run(streams_run(session, web.url, web.child.pid, job_id)))
        return runs


async def streams_run(session: Session, url: str, pid: int, job_id: str) -> StreamsRun:
    headers = {"Authorization": f"Bearer {session.token}"}
    held = await hold(url, f"/api/v1/jobs/{job_id}/events", headers, STREAMS)
    try:
        before = tree_cpu_seconds(pid)
        await asyncio.sleep(HOLD_SECONDS)
        cpu = tree_cpu_seconds(pid) - before
        rss = tree_rss_mb(pid)
        published = await asyncio.to_thread(publish, session, job_id)
        arrivals = await held.wait_output(DELIVERY_TIMEOUT)
    finally:
        await held.close()
    if len(arrivals) < STREAMS:
        raise BenchError(f"i: {len(arrivals)} of {STREAMS} streams got the event")
    run = StreamsRun(
        STREAMS, rss, 100 * cpu / HOLD_SECONDS, [1000 * (a - published) for a in arrivals]
    )
    say(
        f"i: {STREAMS} streams held, web RSS {rss:.0f} MB, CPU {run.cpu_percent:.1f}% while "
        f"idle, one event to all: p50 {run.p50_ms:.0f} ms, p99 {run.p99_ms:.0f} ms"
    )
    return run


def publish(session: Session, job_id: str) -> float:
    env = session.child_env(DJANGO_SETTINGS_MODULE="webapp.settings")
    answer = subprocess.run(
        [sys.executable, "-c", PUBLISH, job_id], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if answer.returncode != 0:
        raise BenchError(f"i: publishing failed: {answer.stderr[-500:]}")
    return float(answer.stdout.split()[0])


def rows(options: Options, runs: list[StreamsRun]) -> list[Row]:
    if not runs:
        return []
    return [
        Row(
            f"i. {STREAMS} event streams held by one web process: RSS, CPU while idle",
            f"{median([r.rss_mb for r in runs]):.0f} MB",
            f"{median([r.cpu_percent for r in runs]):.1f}% CPU",
            runs=", ".join(f"{r.rss_mb:.0f}" for r in runs),
        ),
        Row(
            f"i. one event delivered to all {STREAMS} streams, p50 / p99",
            f"{median([r.p50_ms for r in runs]):.0f} / {median([r.p99_ms for r in runs]):.0f} ms",
            runs=", ".join(f"{r.p99_ms:.0f}" for r in runs),
        ),
    ]


def headline(options: Options, runs: list[StreamsRun]) -> dict[str, Any]:
    return {
        "sse_streams_held": runs[0].streams if runs else None,
        "sse_web_rss_mb": round(median([r.rss_mb for r in runs]), 1) if runs else None,
        "sse_delivery_p99_ms": round(median([r.p99_ms for r in runs]), 1) if runs else None,
    }


SCENARIO = Scenario(
    key="i",
    letters=("i",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, p50_ms=r.p50_ms, p99_ms=r.p99_ms, delays_ms=None),
)
