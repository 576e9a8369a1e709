"""What every scenario of the bench shares: its options, the session, and measuring a run."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from devtools.bench.load import ApiClient, batch_json, batch_texts, in_parallel, job_body
from devtools.bench.stack import (
    BenchEnv,
    Broker,
    JobsTable,
    Processes,
    Simulator,
    Web,
    Worker,
    machine_busy_seconds,
    manage,
    prepare_database,
    redis_db_url,
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
BATCH_QUEUE = "aijobs-bench-batch"
BARE_QUEUE = "aijobs-bench-bare"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/aijobs"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# s between looks at the jobs table while a run drains. Rates come from the rows' own
# timestamps, so a look later changes no figure; each look counts the whole table, and at 50
# a second (5 ms each over a 5,000-item batch's rows) PostgreSQL spent a quarter of a core on
# the bench's looks rather than the jobs'.
JOB_POLL = 0.2
BROKER_POLL = 0.005
# A message between its pop from the queue and its entry in `unacked` is in neither: an empty
# broker counts only when it is still empty this much later.
IDLE_RECHECK = 0.005
# No job running, none waiting, some unfinished for this long: those were lost.
STALL_SECONDS = 3.0
WAIT_TIMEOUT = 120.0  # s for one job, or for a broker to drain


@dataclass(frozen=True)
class Options:
    only: tuple[str, ...]  # letters of the scenarios to run
    runs: int = 3
    jobs: int = 2000
    pool: str = "threads"
    little_pools: tuple[str, ...] = ("threads", "gevent")
    little_outputs: tuple[str, ...] = ("streaming", "plain")
    concurrency: int = 16
    clients: int = 16
    little_seconds: float = 12.0
    latency_jobs: int = 200
    latency_ms: int = 100
    batch_items: int = 5000
    # h's AIJOBS_BATCH_MAX_IN_FLIGHT; None: half a worker's slots, as the deployments set it.
    batch_max_in_flight: int | None = None
    accept_items: int = 10_000
    status_seconds: float = 8.0
    connections: int = 32
    profile: bool = False
    db_connection_limit: int = 80
    redis_db: int = 14
    note: str = ""


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

    def submit(self, web: Web, count: int, kind: ModuleType | None = None) -> list[str]:
        """Submit count jobs over HTTP from --clients threads (the kinds in turn, or only
        `kind`); their ids."""
        self.batches += 1
        tag = f"{os.getpid()}-{self.batches}"
        client = ApiClient(web.url, self.token)
        return in_parallel(
            count, self.options.clients, lambda i: client.submit(job_body(i, tag, kind))
        )

    def submit_batch(self, web: Web, count: int, token: str | None = None) -> float:
        """POST /batches of count items as JSON, as the bench's user or the token's; when the
        request was sent (epoch seconds, its body built before)."""
        self.batches += 1
        body = batch_json(batch_texts(count, f"{os.getpid()}-{self.batches}"))
        client = ApiClient(web.url, token or self.token)
        sent = time.time()
        client.submit_batch(body)
        return sent

    def worker(
        self,
        sim: Simulator,
        pool: str,
        concurrency: int,
        index: int = 0,
        queues: tuple[str, ...] = (QUEUE, BATCH_QUEUE),
        nice: int = 0,
        **env: str,
    ) -> Worker:
        """A platform worker, once it answers a ping (it may have started on the queue); it
        takes single jobs and batch items unless told `queues`."""
        worker = start_worker(
            self.processes,
            self.child_env(sim, **env),
            app="celery_app",
            queues=queues,
            pool=pool,
            concurrency=concurrency,
            index=index,
            nice=nice,
        )
        wait_ready(worker, self.broker)
        return worker

    @contextlib.contextmanager
    def workers(self, sim: Simulator, count: int) -> Iterator[dict[str, int]]:
        """`count` platform workers of the options' pool and concurrency, each stopped after
        the block; their PIDs by the names the meter gives them (worker, worker2, ...)."""
        options = self.options
        with contextlib.ExitStack() as stack:
            pids = {}
            for index in range(count):
                worker = self.worker(sim, options.pool, options.concurrency, index)
                stack.enter_context(stopping(self.processes, worker.child))
                pids[f"worker{index + 1 if index else ''}"] = worker.child.pid
            yield pids

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

    def wait(self, ready: Callable[[], Any], what: str, interval: float) -> Any:
        """Poll `ready` until it returns something truthy, failing when a child died."""
        return wait_until(
            ready, what, timeout=WAIT_TIMEOUT, check=self.processes.check_alive, interval=interval
        )

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
        batch_queue=BATCH_QUEUE,
        bare_queue=BARE_QUEUE,
    )
    say(f"database {BENCH_DATABASE} (role {BENCH_ROLE}), broker db {options.redis_db}")
    manage(env.child_env(), "migrate", "--noinput", "-v", "0")
    token = api_token(env.child_env(), BENCH_USER)
    table = JobsTable(database_url)
    broker = Broker(env.broker_url, (QUEUE, BATCH_QUEUE, BARE_QUEUE))
    return Session(options, env, processes, table, broker, token)


def api_token(env: dict[str, str], username: str) -> str:
    """A new API token of the user, created with the user when there is none."""
    output = manage(env, "create_api_token", username, "--create-user")
    return output.strip().splitlines()[-1]


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


_STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the time since the bench started."""
    elapsed = int(time.monotonic() - _STARTED)
    print(f"bench {elapsed // 60:02d}:{elapsed % 60:02d} {message}", file=sys.stderr, flush=True)
