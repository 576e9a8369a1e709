"""j: 200 clients holding `Prefer: wait=30` while single submissions go on: the submissions'
p99 against the same submissions with nobody waiting (target: within 2x)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from devtools.bench.load import ApiClient, job_body
from devtools.bench.scenario import Row, Scenario, median, percentile, run_json, verdict
from devtools.bench.session import Options, Session, say
from devtools.bench.stack import BenchError, Web, start_web, stopping, wait_until

WAITERS = 200
WAIT_SECONDS = 30
SUBMISSIONS = 100
TARGET = 2.0  # submission p99 with the waiters, against without


@dataclass(frozen=True)
class LongPollRun:
    waiting_p99_ms: float
    idle_p99_ms: float

    @property
    def ratio(self) -> float:
        return self.waiting_p99_ms / self.idle_p99_ms


def run(session: Session, profiles: dict[str, str]) -> list[LongPollRun]:
    web = start_web(session.processes, session.child_env(), name="web-j")
    with stopping(session.processes, web.child):
        return [longpoll_run(session, web) for _ in range(session.options.runs)]


def longpoll_run(session: Session, web: Web) -> LongPollRun:
    session.fresh_run()
    client = ApiClient(web.url, session.token)
    idle = submission_p99(client)
    [job_id] = session.submit(web, 1)  # no worker runs it: the waiters wait out their 30 s
    readers = redis.Redis.from_url(session.env.broker_url)
    before = blocked_readers(readers)
    with ThreadPoolExecutor(WAITERS) as pool:
        waits = [pool.submit(client.wait, job_id, WAIT_SECONDS) for _ in range(WAITERS)]
        wait_until(
            lambda: blocked_readers(readers) >= before + WAITERS,
            "the waiters to wait",
            timeout=WAIT_SECONDS / 2,
            check=web.child.check_alive,
        )
        waiting = submission_p99(client)
        if any(w.done() for w in waits):
            raise BenchError("j: a waiter answered before its wait was over")
    readers.close()
    run = LongPollRun(waiting, idle)
    say(
        f"j: submission p99 {waiting:.1f} ms with {WAITERS} waiters, {idle:.1f} ms without "
        f"({run.ratio:.2f}x)"
    )
    return run


def blocked_readers(client: redis.Redis) -> int:
    """Clients of the bench's Redis blocked in XREAD: the web server's waiters."""
    return sum(1 for c in client.client_list() if c["cmd"] == "xread" and "b" in c["flags"])


def submission_p99(client: ApiClient) -> float:
    """p99 of SUBMISSIONS single submissions, one after another, in ms."""
    times = []
    for index in range(SUBMISSIONS):
        start = time.perf_counter()
        client.submit(job_body(index, f"j-{time.monotonic_ns()}"))
        times.append(1000 * (time.perf_counter() - start))
    return percentile(times, 99)


def rows(options: Options, runs: list[LongPollRun]) -> list[Row]:
    if not runs:
        return []
    ratio = median([r.ratio for r in runs])
    return [
        Row(
            f"j. submission p99 with {WAITERS} clients holding Prefer: wait={WAIT_SECONDS}",
            f"{median([r.waiting_p99_ms for r in runs]):.1f} ms",
            f"no waiters {median([r.idle_p99_ms for r in runs]):.1f} ms",
            f"{ratio:.2f}x",
            f"<= {TARGET:.0f}x",
            verdict(ratio <= TARGET),
            runs=", ".join(f"{r.ratio:.2f}" for r in runs),
        )
    ]


def headline(options: Options, runs: list[LongPollRun]) -> dict[str, Any]:
    if not runs:
        return {"longpoll_submit_p99_ms": None, "idle_submit_p99_ms": None}
    return {
        "longpoll_submit_p99_ms": round(median([r.waiting_p99_ms for r in runs]), 1),
        "idle_submit_p99_ms": round(median([r.idle_p99_ms for r in runs]), 1),
    }


SCENARIO = Scenario(
    key="j",
    letters=("j",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, ratio=r.ratio),
)
