"""`make bench`: the platform's overhead, concurrency, added latency, status polling and memory.

Run under `python -m devtools.servers run --`, which provides DATABASE_URL and REDIS_URL
(`make bench BENCH_ARGS="--quick"` for a smoke run). The driver uses a database
(`aijobs_bench`, owned by a role capped at --db-connection-limit connections) and a Redis
database number (--redis-db) of its own, starts the Claude simulator, gunicorn and Celery
workers as each scenario needs them, and stops every one by PID. It prints one table and
writes bench-results/latest.json (and a dated copy); PERFORMANCE.md explains the figures.

    a  jobs/s end to end (HTTP submit -> finished in Postgres) at zero simulated latency,
       against bare Celery (no-op task, same broker and worker settings) in the same run
    b  jobs/s of one worker with a full queue, in steady state (the first wave left out),
       against concurrency / latency (Little's law), threads and gevent
    c  submit-to-finished time minus the simulated latency, sequential jobs, p50 and p99
    d  GET /api/v1/jobs/{id} requests/s and p99 against a constant Django view, same server
    e  peak RSS of the worker at concurrency 256 (measured during b)

Every figure is the median of --runs runs; every ratio is taken within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from devtools import bench_load, bench_profile
from devtools.bench_bare import NOOP_TASK
from devtools.bench_load import ApiClient, LoadResult, http_load, in_parallel, job_body
from devtools.bench_stack import (
    RESULTS_DIR,
    BenchEnv,
    BenchError,
    Broker,
    JobsTable,
    Processes,
    Simulator,
    Web,
    Worker,
    machine_busy_seconds,
    manage,
    peak_rss_mb,
    prepare_database,
    redis_db_url,
    start_simulator,
    start_web,
    start_worker,
    stopping,
    tree_cpu_seconds,
    wait_ready,
    wait_until,
)

BENCH_DATABASE = "aijobs_bench"
BENCH_ROLE = "aijobs_bench"
BENCH_USER = "bench"
QUEUE = "aijobs-bench"
BARE_QUEUE = "aijobs-bench-bare"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/aijobs"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SCENARIOS = ("a", "b", "c", "d", "e")
# b: (worker concurrency, simulated latency in ms); both bounds are 64 jobs/s.
LITTLE_CONFIGS = ((64, 1000), (256, 4000))
TARGETS = {"a": 0.25, "b": 0.90, "c50": 15.0, "c99": 50.0, "d": 0.60}
JOB_POLL = 0.02  # s between looks at the jobs table while a run drains
LATENCY_POLL = 0.005  # s between looks at one job's row in c
BROKER_POLL = 0.005
# A message between its pop from the queue and its entry in `unacked` is in neither: an empty
# broker counts only when it is still empty this much later.
IDLE_RECHECK = 0.005
# No job running, none waiting, some unfinished for this long: those were lost.
STALL_SECONDS = 3.0
LATENCY_WARMUP_JOBS = 10
STATUS_JOBS = 100
STATUS_WARMUP_SECONDS = 2.0
WAIT_TIMEOUT = 120.0  # s for one job, or for a broker to drain


# --- options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    only: tuple[str, ...] = SCENARIOS
    runs: int = 3
    jobs: int = 2000
    pool: str = "threads"
    little_pools: tuple[str, ...] = ("threads", "gevent")
    concurrency: int = 16
    clients: int = 16
    little_seconds: float = 12.0
    latency_jobs: int = 200
    latency_ms: int = 100
    status_seconds: float = 8.0
    connections: int = 32
    profile: bool = False
    db_connection_limit: int = 80
    redis_db: int = 14
    note: str = ""


QUICK = {
    "runs": 1,
    "jobs": 200,
    "little_seconds": 6.0,
    "latency_jobs": 20,
    "status_seconds": 2.0,
}


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = Options()
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny counts and one run: a smoke test")
    add("--only", default=",".join(SCENARIOS), help="scenarios to run, e.g. a,c")
    add("--runs", type=int, help=f"runs per figure (default {defaults.runs})")
    add("--jobs", type=int, help=f"jobs per run of a (default {defaults.jobs})")
    add(
        "--pool",
        choices=("threads", "gevent"),
        default=defaults.pool,
        help="pool of a and c, and of b's figures in latest.json (default threads)",
    )
    add("--little-pools", default="threads,gevent", help="pools measured in b (both by default)")
    add("--concurrency", type=int, default=defaults.concurrency, help="worker's -c in a, c (16)")
    add("--clients", type=int, default=defaults.clients, help="client threads submitting jobs")
    add("--little-seconds", type=float, help="length of a run of b at the bound (default 12)")
    add("--latency-jobs", type=int, help=f"jobs per run of c (default {defaults.latency_jobs})")
    add("--latency-ms", type=int, default=defaults.latency_ms, help="simulated latency in c")
    add("--status-seconds", type=float, help="length of a load run in d (default 8)")
    add("--connections", type=int, default=defaults.connections, help="connections in d")
    add("--profile", action="store_true", help="also profile a and d with py-spy")
    add(
        "--db-connection-limit",
        type=int,
        default=defaults.db_connection_limit,
        help="connections the bench role may open (default 80), so a shared server keeps room",
    )
    add("--redis-db", type=int, default=defaults.redis_db, help="Redis database of the bench")
    add("--note", default="", help="free text kept in the JSON (e.g. which fixes are applied)")
    return _options(parser, parser.parse_args(argv))


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    if not only or set(only) - set(SCENARIOS):
        parser.error(f"--only takes letters of {','.join(SCENARIOS)}")
    counts = {**(QUICK if args.quick else {})}
    for name in ("runs", "jobs", "little_seconds", "latency_jobs", "status_seconds"):
        if getattr(args, name) is not None:
            counts[name] = getattr(args, name)
    return Options(
        only=only,
        pool=args.pool,
        little_pools=tuple(args.little_pools.split(",")),
        concurrency=args.concurrency,
        clients=args.clients,
        latency_ms=args.latency_ms,
        connections=args.connections,
        profile=args.profile,
        db_connection_limit=args.db_connection_limit,
        redis_db=args.redis_db,
        note=args.note,
        **counts,
    )


# --- the session ------------------------------------------------------------------------


@dataclass
class Session:
    """What every scenario uses: options, environment, processes, the stores, the token."""

    options: Options
    env: BenchEnv
    processes: Processes
    table: JobsTable
    broker: Broker
    token: str
    batches: int = 0

    def child_env(self, sim: Simulator | None = None, **overrides: str) -> dict[str, str]:
        return self.env.child_env(sim.url if sim else "", **overrides)

    def submit(self, web: Web, count: int) -> list[str]:
        """Submit count jobs over HTTP from --clients threads; their ids."""
        self.batches += 1
        tag = f"{os.getpid()}-{self.batches}"
        client = ApiClient(web.url, self.token)
        return in_parallel(count, self.options.clients, lambda i: client.submit(job_body(i, tag)))

    def worker(self, sim: Simulator, pool: str, concurrency: int) -> Worker:
        """A platform worker, once it answers a ping (it may have started on the queue)."""
        worker = start_worker(
            self.processes,
            self.child_env(sim),
            app="celery_app",
            queue=QUEUE,
            pool=pool,
            concurrency=concurrency,
        )
        wait_ready(worker, self.broker)
        return worker

    def meter(self, sim: Simulator | None, **pids: int) -> Meter:
        """CPU of these children, the simulator, and the PostgreSQL and Redis servers."""
        servers = {"postgres": self.table.server_pid(), "redis": self.broker.server_pid()}
        return Meter(sim, {**pids, **{name: pid for name, pid in servers.items() if pid}})

    def fresh_run(self, sim: Simulator | None = None) -> None:
        """Empty tables and queues (no worker may be running) and zero the simulator's counts."""
        self.table.reset()
        self.broker.reset()
        if sim is not None:
            sim.reset()

    def close(self) -> None:
        self.table.close()
        self.broker.close()


def open_session(options: Options, processes: Processes) -> Session:
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    database_url = prepare_database(
        admin_url,
        name=BENCH_DATABASE,
        role=BENCH_ROLE,
        connection_limit=options.db_connection_limit,
    )
    env = BenchEnv(
        database_url=database_url,
        broker_url=redis_db_url(redis_url, options.redis_db),
        queue=QUEUE,
        bare_queue=BARE_QUEUE,
    )
    _say(f"database {BENCH_DATABASE} (role {BENCH_ROLE}), broker db {options.redis_db}")
    manage(env.child_env(), "migrate", "--noinput", "-v", "0")
    output = manage(env.child_env(), "create_api_token", BENCH_USER, "--create-user")
    token = output.strip().splitlines()[-1]
    table = JobsTable(database_url)
    broker = Broker(env.broker_url, (QUEUE, BARE_QUEUE))
    return Session(options, env, processes, table, broker, token)


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """CPU seconds spent over a span of wall time, per process and by the whole machine."""

    wall: float
    cpu: dict[str, float]

    def share(self, name: str) -> float:
        """CPU of `name` as a fraction of one core."""
        return self.cpu.get(name, 0.0) / self.wall if self.wall else 0.0

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        named = sum(value for key, value in self.cpu.items() if key != "machine")
        split = {**self.cpu, "rest (others' processes)": self.cpu["machine"] - named}
        return {key: round(1000 * value / max(jobs, 1), 3) for key, value in split.items()}


class Meter:
    """Start counting CPU on creation; `stop()` returns what was spent since.

    Each process is counted with its children, live and ended (gunicorn's workers,
    PostgreSQL's backends); the servers are shared, so others' use counts there too.
    """

    def __init__(self, sim: Simulator | None, pids: dict[str, int]) -> None:
        self.sim, self.pids = sim, pids
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        sample["driver"] = time.process_time()
        sample["machine"] = machine_busy_seconds()
        sample["wall"] = time.monotonic()
        if self.sim is not None:
            sample["sim"] = float(self.sim.stats()["cpu_seconds"])
        return sample

    def stop(self) -> Usage:
        end = self._sample()
        spent = {name: round(end[name] - self.start[name], 3) for name in end if name != "wall"}
        return Usage(wall=end["wall"] - self.start["wall"], cpu=spent)


@dataclass(frozen=True)
class Outcome:
    """How the jobs of a run ended."""

    succeeded: int
    failed: int
    unfinished: int
    unacked: int  # messages a live worker still holds unacknowledged at the end

    @property
    def all_ok(self) -> bool:
        return self.failed == 0 and self.unfinished == 0


def wait_for_jobs(session: Session, expected: int, timeout: float) -> Outcome:
    """Until `expected` jobs are finished, or the rest are stuck, or timeout passes.

    Stuck: none running and nothing changed for STALL_SECONDS, with the worker up. A job
    whose claim failed stays queued while its message is gone or held unacknowledged.
    """
    deadline = time.monotonic() + timeout
    last, changed_at = (-1, -1), time.monotonic()
    while True:
        counts = session.table.counts()
        finished = sum(counts.get(status, 0) for status in JobsTable.FINISHED)
        running = counts.get("running", 0)
        now = time.monotonic()
        if (finished, running) != last:
            last, changed_at = (finished, running), now
        stuck = running == 0 and now - changed_at > STALL_SECONDS
        if finished >= expected or stuck or now > deadline:
            break
        session.processes.check_alive()
        time.sleep(JOB_POLL)
    succeeded = counts.get("succeeded", 0)
    return Outcome(succeeded, finished - succeeded, expected - finished, session.broker.unacked())


def broker_drained(broker: Broker) -> bool:
    if not broker.idle():
        return False
    time.sleep(IDLE_RECHECK)
    return broker.idle()


def sim_note(usage: Usage) -> str:
    return f"{usage.cpu.get('sim', 0.0):.2f} s ({100 * usage.share('sim'):.0f}% of a core)"


# --- a: platform overhead -----------------------------------------------------------------


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


def scenario_a(session: Session, profiles: dict[str, str]) -> list[OverheadRun]:
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
    _say(
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
        app="devtools.bench_bare",
        queue=BARE_QUEUE,
        pool=options.pool,
        concurrency=options.concurrency,
    )
    with stopping(session.processes, worker.child):
        wait_ready(worker, session.broker)
        meter = session.meter(None, worker=worker.child.pid)
        started = time.time()
        send = session.broker.app.send_task
        in_parallel(tasks, options.clients, lambda i: send(NOOP_TASK, args=[i], queue=BARE_QUEUE))
        _wait(lambda: broker_drained(session.broker), "the bare tasks", session, BROKER_POLL)
        finished = time.time() - IDLE_RECHECK
        usage = meter.stop()
    return tasks / (finished - started), usage


# Wraps the measured span of a run, given its worker and web server (a profiler does).
Recorder = Callable[[Worker, Web], contextlib.AbstractContextManager[None]]


def platform_rate_of(
    session: Session, sim: Simulator, web: Web, jobs: int, recorder: Recorder | None = None
) -> tuple[float, Outcome, Usage]:
    """Jobs per second from the first POST to the last job's finished_at."""
    session.fresh_run(sim)
    worker = session.worker(sim, session.options.pool, session.options.concurrency)
    profiled = recorder(worker, web) if recorder else contextlib.nullcontext()
    with stopping(session.processes, worker.child), profiled:
        meter = session.meter(sim, web=web.child.pid, worker=worker.child.pid)
        started = time.time()
        session.submit(web, jobs)
        outcome = wait_for_jobs(session, jobs, timeout=60 + jobs / 10)
        usage = meter.stop()
    _, last = session.table.window()
    return outcome.succeeded / (last - started), outcome, usage


def profile_platform(session: Session, sim: Simulator, web: Web) -> dict[str, str]:
    """One more run of a, with py-spy sampling the worker and the web server."""

    @contextlib.contextmanager
    def recorder(worker: Worker, web: Web) -> Iterator[None]:
        with (
            recording(session, worker.child.pid, "worker-a"),
            recording(session, web.child.pid, "web-a", subprocesses=True),
        ):
            yield

    rate, _, _ = platform_rate_of(session, sim, web, session.options.jobs, recorder)
    _say(f"a profiled run: {rate:.0f} jobs/s (slowed by the profiler; not a figure)")
    return profile_files("worker-a", "web-a")


PROFILE_VIEWS = {"gil": True, "active": False}


@contextlib.contextmanager
def recording(
    session: Session, pid: int, name: str, *, subprocesses: bool = False
) -> Iterator[None]:
    """Record both views of pid (GIL holder, active threads) into bench-results/profile-*."""
    records = [
        bench_profile.start_recording(
            session.processes, pid, profile_path(name, view), subprocesses=subprocesses, gil=gil
        )
        for view, gil in PROFILE_VIEWS.items()
    ]
    try:
        yield
    finally:
        for record in records:
            bench_profile.stop_recording(session.processes, record)


def profile_path(name: str, view: str) -> Path:
    return RESULTS_DIR / f"profile-{name}-{view}.raw"


def profile_files(*names: str) -> dict[str, str]:
    return {
        f"{name}-{view}": str(profile_path(name, view).with_suffix(".txt"))
        for name in names
        for view in PROFILE_VIEWS
    }


# --- b and e: concurrency against Little's law ---------------------------------------------


@dataclass(frozen=True)
class LittleRun:
    """A run of b. `rate` is the steady state (see steady_rate) when every job succeeded and
    there was a second wave, else `end_to_end_rate`: first start to last finish.
    """

    pool: str
    concurrency: int
    latency_s: float
    rate: float
    end_to_end_rate: float
    submitted: int
    outcome: Outcome
    peak_rss_mb: float
    sim_max_in_flight: int
    usage: Usage

    @property
    def bound(self) -> float:
        return self.concurrency / self.latency_s

    @property
    def efficiency(self) -> float:
        return self.rate / self.bound


def scenario_b(session: Session, configs: Sequence[tuple[int, int]]) -> list[LittleRun]:
    # This web server only fills the queue and is never measured. Where settings keep a
    # connection per thread for AIJOBS_DB_CONN_MAX_AGE, 0 closes them after each request, so
    # every connection the bench role may open is left to the worker under test.
    web_env = session.child_env(AIJOBS_DB_CONN_MAX_AGE="0")
    web = start_web(session.processes, web_env, name="web-b")
    runs = []
    with stopping(session.processes, web.child):
        for concurrency, latency_ms in configs:
            sim = start_simulator(session.processes, session.child_env(), latency_ms)
            with stopping(session.processes, sim.child):
                # Pools take turns, so a drift of the shared machine favours neither.
                for _ in range(session.options.runs):
                    for pool in session.options.little_pools:
                        runs.append(little_run(session, sim, web, pool, concurrency, latency_ms))
    return runs


def little_run(
    session: Session, sim: Simulator, web: Web, pool: str, concurrency: int, latency_ms: int
) -> LittleRun:
    """Fill the queue, then start one worker: its rate from first start to last finish."""
    bound = concurrency / (latency_ms / 1000)
    # Whole waves of `concurrency` jobs, at least two: what steady_rate needs.
    waves = max(2, round(session.options.little_seconds * bound / concurrency))
    jobs = concurrency * waves
    session.fresh_run(sim)
    session.submit(web, jobs)
    worker = session.worker(sim, pool, concurrency)
    with stopping(session.processes, worker.child):
        # The rate counts from the first claim, so the start-up before this is not in it.
        meter = session.meter(sim, worker=worker.child.pid)
        outcome = wait_for_jobs(session, jobs, timeout=60 + 3 * jobs / bound)
        rss = peak_rss_mb(worker.child.pid)
        usage = meter.stop()
    first, last = session.table.window()
    end_to_end = outcome.succeeded / (last - first)
    steady = steady_rate(session.table.finish_times(), concurrency) if outcome.all_ok else None
    stats = sim.stats()
    run = LittleRun(
        pool, concurrency, latency_ms / 1000, steady or end_to_end, end_to_end, jobs, outcome,
        rss, int(stats["max_in_flight"]), usage,
    )  # fmt: skip
    _say(
        f"b {pool} c{concurrency} @{latency_ms} ms: {run.rate:.1f} jobs/s "
        f"({'steady state' if steady else 'no steady span: end to end'}; end to end "
        f"{end_to_end:.1f}) = {run.efficiency:.0%} of {bound:.0f}, "
        f"{outcome.succeeded}/{jobs} succeeded "
        f"({outcome.unacked} left unacked), "
        f"peak RSS {rss:.0f} MiB, sim in flight max {run.sim_max_in_flight}, sim {sim_note(usage)}"
    )
    return run


def steady_rate(finishes: list[float], concurrency: int) -> float | None:
    """Jobs per second with every slot busy: the first wave left out, from the c-th finish on.

    A prefilled queue starts `concurrency` jobs in a burst whose spread (claims queue for
    the GIL) repeats in every later wave and in the drain at the end; measuring from the
    c-th finish to the last one cancels both, so what remains is concurrency / (latency +
    the time a slot spends on each job besides the call). Exact for whole waves (a job
    count that is a multiple of concurrency); None without a second wave.
    """
    if len(finishes) <= concurrency:
        return None
    return (len(finishes) - concurrency) / (finishes[-1] - finishes[concurrency - 1])


# --- c: added latency ---------------------------------------------------------------------


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


def scenario_c(session: Session) -> list[LatencyRun]:
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
    _say(f"c: added p50 {run.p50:.1f} ms, p99 {run.p99:.1f} ms; medians (ms): {parts}")
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
    finished = _wait(
        lambda: session.table.finished_at(job_id), "a job to finish", session, LATENCY_POLL
    )
    seen = time.time()
    created, started, _, calls = session.table.timeline(job_id)
    segments = (created - submitted, started - created, finished - started - calls)
    return JobLatency(
        added_ms=1000 * (finished - submitted - simulated),
        observed_ms=1000 * (seen - submitted - simulated),
        segments_ms=tuple(1000 * value for value in (*segments, calls - simulated)),
    )


# --- d: status polling --------------------------------------------------------------------


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

    @property
    def ratio(self) -> float:
        return self.status.result.rps / self.baseline.result.rps


def scenario_d(session: Session, profiles: dict[str, str]) -> list[StatusRun]:
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
                with recording(session, web.child.pid, "web-d", subprocesses=True):
                    load("status", session.options.status_seconds)
                profiles.update(profile_files("web-d"))
    return runs


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
    _say(
        f"d run {index + 1}: status {status.result.rps:.0f} req/s "
        f"(p99 {status.result.p99_ms:.1f} ms, web CPU {status.cpu_ms_per_request('web'):.2f} "
        f"ms/req, postgres {status.cpu_ms_per_request('postgres'):.2f}), constant view "
        f"{baseline.result.rps:.0f} req/s (p99 {baseline.result.p99_ms:.1f} ms, web CPU "
        f"{baseline.cpu_ms_per_request('web'):.2f} ms/req), ratio {run.ratio:.0%}"
    )
    return run


# --- running it all ---------------------------------------------------------------------------


@dataclass
class Results:
    a: list[OverheadRun] = field(default_factory=list)
    b: list[LittleRun] = field(default_factory=list)
    c: list[LatencyRun] = field(default_factory=list)
    d: list[StatusRun] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def run_scenarios(session: Session) -> Results:
    only = session.options.only
    results = Results()
    if "a" in only:
        results.a = scenario_a(session, results.profiles)
    configs = [c for c in LITTLE_CONFIGS if "b" in only or ("e" in only and c[0] == 256)]
    if configs:
        results.b = scenario_b(session, configs)
    if "c" in only:
        results.c = scenario_c(session)
    if "d" in only:
        results.d = scenario_d(session, results.profiles)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    processes = Processes()
    session: Session | None = None
    started = time.monotonic()
    try:
        session = open_session(options, processes)
        results = run_scenarios(session)
    except KeyboardInterrupt:
        _say("interrupted: stopping what was started")
        return 130
    except BenchError as error:
        _say(f"failed: {error}")
        return 1
    finally:
        processes.stop_all()
        if session is not None:
            session.close()
    results.seconds = time.monotonic() - started
    publish(options, results)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    sim: str = ""
    runs: str = ""


def publish(options: Options, results: Results) -> None:
    rows = table_rows(options, results)
    text = render(rows) + "\n" + cpu_breakdown(results)
    report = json_report(options, results)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "")[:15]
    for name in ("latest", f"bench-{stamp}"):
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / "latest.md").write_text(text)
    print(text)
    for name, path in results.profiles.items():
        print(f"profile {name}: {path}")
    print(f"bench took {results.seconds / 60:.1f} min; results in {RESULTS_DIR}/latest.json")


def table_rows(options: Options, results: Results) -> list[Row]:
    rows: list[Row] = []
    if results.a:
        rows.append(overhead_row(options, results.a))
    for pool in options.little_pools:
        for concurrency, latency_ms in LITTLE_CONFIGS:
            runs = [r for r in results.b if r.pool == pool and r.concurrency == concurrency]
            if runs and ("b" in options.only):
                rows.append(little_row(runs, latency_ms))
    rows += [rss_row(results.b, pool) for pool in options.little_pools if _c256(results.b, pool)]
    if results.c:
        rows += latency_rows(options, results.c)
    if results.d:
        rows += status_rows(results.d, options.connections)
    return rows


def overhead_row(options: Options, runs: list[OverheadRun]) -> Row:
    ratio = median([r.ratio for r in runs])
    return Row(
        f"a. jobs/s end to end, {options.jobs} jobs, {options.pool} c{options.concurrency}",
        f"{median([r.platform_rate for r in runs]):.0f}",
        f"bare Celery {median([r.bare_rate for r in runs]):.0f} tasks/s",
        f"{ratio:.1%}",
        f">= {TARGETS['a']:.0%}",
        _verdict(ratio >= TARGETS["a"]),
        _sim_median([r.platform_usage for r in runs]),
        ", ".join(f"{r.platform_rate:.0f}/{r.bare_rate:.0f}" for r in runs),
    )


def little_row(runs: list[LittleRun], latency_ms: int) -> Row:
    first = runs[0]
    efficiency = median([r.efficiency for r in runs])
    lost = sum(r.outcome.unfinished + r.outcome.failed for r in runs)
    return Row(
        f"b. jobs/s steady, 1 worker, {first.pool} c{first.concurrency} @ {latency_ms / 1000:g} s",
        f"{median([r.rate for r in runs]):.1f}",
        f"bound {first.bound:.0f} jobs/s",
        f"{efficiency:.1%}",
        f">= {TARGETS['b']:.0%}",
        _verdict(efficiency >= TARGETS["b"]) + (f" ({lost} jobs lost)" if lost else ""),
        _sim_median([r.usage for r in runs]),
        ", ".join(
            f"{r.efficiency:.0%} (end to end {r.end_to_end_rate / r.bound:.0%})" for r in runs
        ),
    )


def rss_row(runs: list[LittleRun], pool: str) -> Row:
    c256 = _c256(runs, pool)
    return Row(
        f"e. worker peak RSS, {pool} c256",
        f"{median([r.peak_rss_mb for r in c256]):.0f} MiB",
        runs=", ".join(f"{r.peak_rss_mb:.0f}" for r in c256),
    )


def latency_rows(options: Options, runs: list[LatencyRun]) -> list[Row]:
    sim = _sim_median([r.usage for r in runs])
    what = f"{options.latency_jobs} sequential jobs @ {options.latency_ms} ms"
    rows = []
    for name, q, target in (("p50", 50, TARGETS["c50"]), ("p99", 99, TARGETS["c99"])):
        values = [percentile(r.added_ms, q) for r in runs]
        observed = median([percentile(r.observed_ms, q) for r in runs])
        rows.append(
            Row(
                f"c. added latency {name}, {what}",
                f"{median(values):.1f} ms",
                f"seen by polling: {observed:.1f} ms",
                "",
                f"< {target:g} ms",
                _verdict(median(values) < target),
                sim,
                ", ".join(f"{v:.1f}" for v in values),
            )
        )
    return rows


def status_rows(runs: list[StatusRun], connections: int) -> list[Row]:
    ratio = median([r.ratio for r in runs])
    status = [r.status.result for r in runs]
    baseline = [r.baseline.result for r in runs]
    return [
        Row(
            f"d. GET /jobs/{{id}} req/s, {connections} connections ({status[0].generator})",
            f"{median([r.rps for r in status]):.0f}",
            f"constant view {median([r.rps for r in baseline]):.0f} req/s",
            f"{ratio:.1%}",
            f">= {TARGETS['d']:.0%}",
            _verdict(ratio >= TARGETS["d"]),
            "idle (not in the path)",
            ", ".join(f"{s.rps:.0f}/{b.rps:.0f}" for s, b in zip(status, baseline, strict=True)),
        ),
        Row(
            "d. GET /jobs/{id} p99 under that load",
            f"{median([r.p99_ms for r in status]):.1f} ms",
            f"constant view {median([r.p99_ms for r in baseline]):.1f} ms",
            runs=", ".join(f"{r.p99_ms:.1f}" for r in status),
        ),
    ]


def render(rows: list[Row]) -> str:
    header = Row("figure (median of runs)", "value", "baseline", "ratio", "target", "", "sim CPU")
    lines = [[*asdict(header).values()], *([*asdict(row).values()] for row in rows)]
    lines[0][-1] = "runs"
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out) + "\n"


def cpu_breakdown(results: Results) -> str:
    """Where the CPU went, per job in a and per request in d: which process to look at first."""
    lines = []
    if results.a:
        lines.append("CPU ms per job in a (median of runs; 'machine' is both cores together):")
        for label, per_run in (
            ("platform", [r.platform_usage.per_job_ms(r.jobs) for r in results.a]),
            ("bare Celery", [r.bare_usage.per_job_ms(r.jobs) for r in results.a]),
        ):
            keys = per_run[0].keys()
            parts = ", ".join(f"{key} {median([run[key] for run in per_run]):.2f}" for key in keys)
            lines.append(f"  {label}: {parts}")
    if results.d:
        lines.append("CPU ms per request in d (median of runs):")
        for label, loads in (
            ("GET /jobs/{id}", [r.status for r in results.d]),
            ("constant view", [r.baseline for r in results.d]),
        ):
            web = median([load.cpu_ms_per_request("web") for load in loads])
            postgres = median([load.cpu_ms_per_request("postgres") for load in loads])
            lines.append(f"  {label}: web {web:.2f}, postgres {postgres:.2f}")
    return "\n".join(lines) + ("\n" if lines else "")


def json_report(options: Options, results: Results) -> dict[str, Any]:
    report: dict[str, Any] = {
        **headline(options, results),
        "cores": os.cpu_count(),
        "versions": versions(),
        "pool": options.pool,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "note": options.note,
        "load_generator": bench_load.load_generator(),
        "bench_seconds": round(results.seconds),
        "options": asdict(options),
        "profiles": results.profiles,
        "runs": {
            "a": [_run_json(r, ratio=r.ratio) for r in results.a],
            "b": [_run_json(r, bound=r.bound, efficiency=r.efficiency) for r in results.b],
            "c": [_latency_json(r) for r in results.c],
            "d": [_run_json(r, ratio=r.ratio) for r in results.d],
        },
    }
    return report


def headline(options: Options, results: Results) -> dict[str, Any]:
    """The keys the issue names; None for a scenario that was not run."""
    a, c, d = results.a, results.c, results.d
    pool = options.pool if options.pool in options.little_pools else options.little_pools[0]

    def efficiency(concurrency: int) -> float | None:
        runs = [r for r in results.b if r.pool == pool and r.concurrency == concurrency]
        return round(median([r.efficiency for r in runs]), 4) if runs else None

    c256 = _c256(results.b, pool)
    return {
        "overhead_jobs_per_s": round(median([r.platform_rate for r in a]), 1) if a else None,
        "bare_celery_tasks_per_s": round(median([r.bare_rate for r in a]), 1) if a else None,
        "overhead_ratio": round(median([r.ratio for r in a]), 4) if a else None,
        "littles_law_efficiency_c64": efficiency(64) if "b" in options.only else None,
        "littles_law_efficiency_c256": efficiency(256) if "b" in options.only else None,
        "added_latency_p50_ms": round(median([r.p50 for r in c]), 2) if c else None,
        "added_latency_p99_ms": round(median([r.p99 for r in c]), 2) if c else None,
        "status_rps": round(median([r.status.result.rps for r in d]), 1) if d else None,
        "bare_django_rps": round(median([r.baseline.result.rps for r in d]), 1) if d else None,
        "status_ratio": round(median([r.ratio for r in d]), 4) if d else None,
        "worker_peak_rss_mb_c256": round(median([r.peak_rss_mb for r in c256]), 1)
        if c256
        else None,
        "b_pool": pool,
    }


def revision() -> str:
    """The commit measured (with -dirty for local changes), from git or AIJOBS_BENCH_REVISION."""
    if os.environ.get("AIJOBS_BENCH_REVISION"):
        return os.environ["AIJOBS_BENCH_REVISION"]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=RESULTS_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


def versions() -> dict[str, str]:
    packages = {
        "django": "Django",
        "celery": "celery",
        "kombu": "kombu",
        "redis-py": "redis",
        "anthropic": "anthropic",
        "psycopg": "psycopg",
        "gunicorn": "gunicorn",
        "gevent": "gevent",
        "django-celery-results": "django_celery_results",
        "django-ninja": "django-ninja",
        "pydantic": "pydantic",
    }
    found = {"python": platform.python_version()}
    for label, package in packages.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[label] = importlib.metadata.version(package)
    return found


def _run_json(run: Any, **extra: Any) -> dict[str, Any]:
    return {**asdict(run), **extra}


def _latency_json(run: LatencyRun) -> dict[str, Any]:
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


# --- small helpers ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _c256(runs: list[LittleRun], pool: str) -> list[LittleRun]:
    return [r for r in runs if r.pool == pool and r.concurrency == 256]


def _sim_median(usages: list[Usage]) -> str:
    cpu = median([u.cpu.get("sim", 0.0) for u in usages])
    share = median([u.share("sim") for u in usages])
    return f"{cpu:.2f} s, {share:.0%} of a core"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _wait(ready: Callable[[], Any], what: str, session: Session, interval: float) -> Any:
    return wait_until(
        ready, what, timeout=WAIT_TIMEOUT, check=session.processes.check_alive, interval=interval
    )


_STARTED = time.monotonic()


def _say(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"bench {elapsed // 60:02d}:{elapsed % 60:02d} {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
