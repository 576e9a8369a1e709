"""The benchmark's processes and stores: simulator, web, workers, its database and broker.

Every process is started here with its PID kept and stopped by that PID (SIGTERM, then
SIGKILL), in reverse order of starting, also when the driver is interrupted. The benchmark
uses a database and a Redis database number of its own, so nothing else on a shared
machine reads its messages or rows, and it never touches anyone else's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from celery import Celery
from psycopg import sql

from devtools.claude_sim import url_from_banner
from devtools.servers import free_port
from devtools.web import web_command

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench-results"
LOG_DIR = RESULTS_DIR / "logs"
STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
READY_TIMEOUT = 90.0
POLL_INTERVAL = 0.05
HTTP_TIMEOUT = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# kombu's Redis transport keeps unacknowledged messages here, for every queue of a database.
UNACKED_KEYS = ("unacked", "unacked_index", "unacked_mutex")
# kombu stores priority levels of a queue as extra lists named queue + this + level.
PRIORITY_SEPARATOR = "\x06\x16"


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# --- processes ------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} (pid {self.pid}) exited with {self.proc.returncode}:\n"
                f"{tail(self.log)}"
            )


class Processes:
    """Every process the benchmark started; `stop_all` ends them by PID, newest first."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], *, pipe_stdout: bool = False
    ) -> Child:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else sink,
                stderr=sink,
                # Its own session: a Ctrl-C at the terminal reaches only the driver, which then
                # stops its children in order.
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self._children.append(child)
        return child

    def stop(self, child: Child, sig: signal.Signals = signal.SIGTERM) -> None:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            try:
                child.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.proc.wait(timeout=KILL_TIMEOUT)
        if child.proc.stdout is not None:
            child.proc.stdout.close()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child)

    def check_alive(self) -> None:
        for child in self._children:
            child.check_alive()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    ready: Callable[[], Any],
    what: str,
    *,
    timeout: float,
    check: Callable[[], None],
    interval: float = POLL_INTERVAL,
) -> Any:
    """Poll ready() until truthy and return that; `check` raises when a process it needs died."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        check()
        if time.monotonic() > deadline:
            raise BenchError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- the environment ------------------------------------------------------------------


@dataclass(frozen=True)
class BenchEnv:
    """Where the benchmark's processes keep their state, and the environment they get."""

    database_url: str
    broker_url: str
    queue: str
    batch_queue: str
    bare_queue: str

    def child_env(self, sim_url: str = "", **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-not-for-production",
            "DJANGO_DEBUG": "false",
            # Plain http on loopback stands in for TLS ended at a proxy: no redirect to https.
            "DJANGO_HTTPS": "false",
            "DJANGO_SECURE_COOKIES": "false",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.broker_url,
            "CELERY_BROKER_URL": self.broker_url,
            "AIJOBS_QUEUE": self.queue,
            "AIJOBS_BATCH_QUEUE": self.batch_queue,
            "AIJOBS_BENCH_BARE_QUEUE": self.bare_queue,
            "ANTHROPIC_API_KEY": "sim-bench-key",
            "AIJOBS_SIMULATED": "true",
            # The per-user submission limit would refuse a benchmark's burst; set this high it
            # is still checked on every submission, so its cost stays in the figures.
            "AIJOBS_SUBMISSIONS_PER_MINUTE": "100000000",
            "AIJOBS_REDIS_PREFIX": "aijobs-bench",
            "PYTHONUNBUFFERED": "1",
        }
        if sim_url:
            env["ANTHROPIC_BASE_URL"] = sim_url
        env.update(overrides)
        return env


def with_path(url: str, *, database: str | None = None, user: str | None = None) -> str:
    """url with another database name and/or user (a password in it is dropped with the user)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def redis_db_url(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


# --- the database -----------------------------------------------------------------------


def prepare_database(admin_url: str, *, name: str, role: str, connection_limit: int) -> str:
    """Create the bench role (capped at connection_limit) and a fresh database; return its URL.

    The database is dropped and made anew each run: every run starts from the same state,
    and migrations edited in place (before a first release) cannot leave it stale. The cap
    keeps a worker that opens one connection per thread from taking every slot of a server
    others use too: past it, the bench's own connections fail, nobody else's. Without the
    right to create roles, the admin URL's user is used, uncapped.
    """
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        owner = _ensure_role(conn, role, connection_limit)
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner or _current_user(conn))
            )
        )
    return with_path(admin_url, database=name, user=owner)


def _ensure_role(conn: psycopg.Connection[Any], role: str, limit: int) -> str | None:
    try:
        found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if found else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN CONNECTION LIMIT {}").format(
                sql.Identifier(role), sql.Literal(limit)
            )
        )
    except psycopg.errors.InsufficientPrivilege:
        print(f"bench: cannot create role {role}; connections are not capped", file=sys.stderr)
        return None
    return role


def _current_user(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "postgres"


def manage(env: dict[str, str], *args: str) -> str:
    """Run manage.py with env; its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


class JobsTable:
    """The driver's view of the jobs table, read with plain SQL (the driver has no Django)."""

    FINISHED = ("succeeded", "failed", "canceled")

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def reset(self) -> None:
        """Empty the tables a run writes, so every run starts from the same state.

        CASCADE also empties what refers to jobs and batches (their webhook messages), so a
        table added later cannot make the reset fail; nothing a run reads refers the other way.
        """
        self.conn.execute(
            "TRUNCATE jobs_providercall, jobs_job, jobs_batch, django_celery_results_taskresult"
            " CASCADE"
        )

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, count(*) FROM jobs_job GROUP BY status")
        return dict(rows.fetchall())

    def batch_items(self, *, finished: bool) -> int:
        """Items of batches that are finished, or not yet."""
        row = self.conn.execute(
            "SELECT count(*) FROM jobs_job WHERE batch_id IS NOT NULL"
            f" AND {'' if finished else 'NOT '}(status = ANY(%s))",
            (list(self.FINISHED),),
        ).fetchone()
        return int(row[0]) if row else 0

    def window(self) -> tuple[float, float]:
        """Epoch seconds of the first start and the last finish."""
        row = self.conn.execute(
            "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at))"
            " FROM jobs_job WHERE status = 'succeeded'"
        ).fetchone()
        if row is None or row[0] is None:
            raise BenchError("no job succeeded")
        return float(row[0]), float(row[1])

    def server_pid(self) -> int | None:
        """The postmaster's PID when PostgreSQL runs on this machine, else None."""
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        if row is None:
            return None
        with contextlib.suppress(OSError, IndexError, ValueError):
            return parent_of(int(row[0]))
        return None

    def call_times(self) -> dict[str, list[float]]:
        """Per model, the epoch seconds at which each provider call was recorded, in order."""
        rows = self.conn.execute(
            "SELECT model, extract(epoch FROM created_at) FROM jobs_providercall"
            " ORDER BY created_at"
        )
        times: dict[str, list[float]] = {}
        for model, moment in rows.fetchall():
            times.setdefault(model, []).append(float(moment))
        return times

    def finish_times(self) -> list[float]:
        """Epoch seconds at which the succeeded jobs finished, in order."""
        rows = self.conn.execute(
            "SELECT extract(epoch FROM finished_at) FROM jobs_job"
            " WHERE status = 'succeeded' ORDER BY finished_at"
        ).fetchall()
        return [float(value) for (value,) in rows]

    def timeline(self, job_id: str) -> tuple[float, float, float, float]:
        """Epoch seconds of created_at, started_at, finished_at; seconds in provider calls."""
        row = self.conn.execute(
            "SELECT extract(epoch FROM j.created_at), extract(epoch FROM j.started_at),"
            " extract(epoch FROM j.finished_at), coalesce(sum(c.latency_ms), 0) / 1000.0"
            " FROM jobs_job j LEFT JOIN jobs_providercall c ON c.job_id = j.id"
            " WHERE j.id = %s GROUP BY j.id",
            (job_id,),
        ).fetchone()
        if row is None or None in row:
            raise BenchError(f"job {job_id} has no complete timeline")
        created, started, finished, calls = (float(value) for value in row)
        return created, started, finished, calls

    def finished_at(self, job_id: str) -> float | None:
        """Epoch seconds at which the job finished, None while it runs."""
        row = self.conn.execute(
            "SELECT extract(epoch FROM finished_at) FROM jobs_job WHERE id = %s", (job_id,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None


# --- the broker -------------------------------------------------------------------------


class Broker:
    """The bench's Redis database: its queues, and the app the driver sends and pings with."""

    def __init__(self, url: str, queues: tuple[str, ...]) -> None:
        self.redis = redis.Redis.from_url(url)
        self.queues = queues
        # Celery prefers CELERY_BROKER_URL from the environment to its `broker` argument, and
        # devtools.servers exports the shared one: the driver must use the bench's.
        os.environ["CELERY_BROKER_URL"] = url
        self.app = Celery("aijobs-bench-driver", broker=url)
        self.app.conf.update(task_serializer="json", accept_content=["json"])

    def close(self) -> None:
        self.redis.close()

    def reset(self) -> None:
        """Drop leftover messages of the bench queues; only while no worker runs."""
        keys = [*UNACKED_KEYS]
        for queue in self.queues:
            keys += [queue, *self.redis.scan_iter(match=f"{queue}{PRIORITY_SEPARATOR}*")]
        self.redis.delete(*keys)

    def idle(self) -> bool:
        """No message waiting and none delivered but unacknowledged."""
        waiting = sum(int(self.redis.llen(queue)) for queue in self.queues)
        return waiting == 0 and self.unacked() == 0

    def server_pid(self) -> int | None:
        """redis-server's PID when it runs on this machine, else None."""
        pid = int(self.redis.info("server").get("process_id", 0))
        return pid if Path(f"/proc/{pid}").exists() else None

    def unacked(self) -> int:
        return int(self.redis.hlen("unacked"))

    def ping(self, worker_name: str) -> bool:
        return bool(self.app.control.ping(destination=[worker_name], timeout=0.5))


# --- the services -----------------------------------------------------------------------


@dataclass
class Simulator:
    child: Child
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=HTTP_TIMEOUT) as answer:
            return dict(json.load(answer))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_sim/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):
            pass


def start_simulator(processes: Processes, env: dict[str, str], latency_ms: int) -> Simulator:
    command = [sys.executable, "-m", "devtools.claude_sim", "--port", "0"]
    command += ["--latency-ms", str(latency_ms)]
    child = processes.start(f"sim-{latency_ms}ms", command, env, pipe_stdout=True)
    assert child.proc.stdout is not None
    line = child.proc.stdout.readline().decode()
    try:
        return Simulator(child, url_from_banner(line))
    except ValueError as error:
        child.check_alive()
        raise BenchError(str(error)) from None


@dataclass
class Web:
    child: Child
    url: str


# The WSGI server the web app ran on before the ASGI one, beside it in scenario d.
WSGI_COMMAND = (
    "webapp.wsgi", "--worker-class=gthread", "--threads=16", "--no-control-socket",
)  # fmt: skip


def start_web(
    processes: Processes,
    env: dict[str, str],
    name: str = "web",
    *,
    workers: int = 2,
    wsgi: bool = False,
) -> Web:
    """The web server as docker-compose.yml runs it (or the old WSGI one), with the bench
    URLconf (its baseline view)."""
    port = free_port()
    command = web_command(f"127.0.0.1:{port}", workers=workers)
    if wsgi:
        command = [
            sys.executable, "-m", "gunicorn", *WSGI_COMMAND, f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
        ]  # fmt: skip
    env = {**env, "DJANGO_SETTINGS_MODULE": "devtools.bench.settings"}
    web = Web(processes.start(name, command, env), f"http://127.0.0.1:{port}")
    wait_until(
        lambda: _answers(f"{web.url}/bench/constant"),
        "the web server",
        timeout=READY_TIMEOUT,
        check=web.child.check_alive,
    )
    return web


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Worker:
    child: Child
    name: str


def start_worker(
    processes: Processes,
    env: dict[str, str],
    *,
    app: str,
    queues: tuple[str, ...],
    pool: str,
    concurrency: int,
    index: int = 0,
    nice: int = 0,
) -> Worker:
    """`celery -A app worker -P pool -c concurrency -Q queues`, as docker-compose.yml runs it,
    under `nice -n nice` when that is given; `index` tells apart workers started together.

    Mingle and gossip are off: they only slow start-up and talk to other workers.
    """
    label = f"{'bare' if 'bare' in app else 'worker'}-{pool}-c{concurrency}"
    label += f"-{index + 1}" if index else ""
    name = f"bench-{label}-{os.getpid()}@{socket.gethostname()}"
    command = [
        *(("nice", "-n", str(nice)) if nice else ()),
        sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency),
        "-Q", ",".join(queues), "-n", name, "--without-mingle", "--without-gossip", "-l", "INFO",
    ]  # fmt: skip
    return Worker(processes.start(label, command, env), name)


def wait_ready(worker: Worker, broker: Broker) -> None:
    wait_until(
        lambda: broker.ping(worker.name),
        f"worker {worker.name} to answer a ping",
        timeout=READY_TIMEOUT,
        check=worker.child.check_alive,
    )


# --- measuring processes ----------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from its third field on (the state), as man proc numbers them minus 3."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User plus system CPU time of a live process (all its threads), 0 once it is gone.

    reaped_children: add what its children that ended and were waited for had spent, so a
    server forking a process per connection (PostgreSQL) is counted whole.
    """
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of its live children and of its reaped ones."""
    own = cpu_seconds(pid, reaped_children=True)
    return own + sum(cpu_seconds(child) for child in children_of(pid))


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if parent_of(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return found


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle, summed over cores."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@contextlib.contextmanager
def stopping(processes: Processes, child: Child) -> Iterator[Child]:
    """Stop child when the block ends, however it ends."""
    try:
        yield child
    finally:
        processes.stop(child)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live children (gunicorn's workers), in MB."""
    total_kb = 0
    for member in (pid, *children_of(pid)):
        with contextlib.suppress(OSError, StopIteration):
            status = Path(f"/proc/{member}/status").read_text().splitlines()
            total_kb += int(next(line for line in status if line.startswith("VmRSS:")).split()[1])
    return total_kb / 1000
