"""devtools.servers: find or start PostgreSQL and Redis, then stop exactly what was started.

Needs no Django: `python -m pytest tests/devtools/test_servers.py`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from devtools.servers import (
    ServicesError,
    find_postgres,
    find_redis,
    mask_url,
    pid_alive,
    probe_postgres,
    probe_redis,
    processes_in,
    services,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
    "REDIS_URL": "redis://127.0.0.1:1/0",
}
CHECKING_CHILD = """
import os, sys, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    conn.execute("SELECT 1")
redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
sys.exit(3 if os.environ["CELERY_BROKER_URL"] == os.environ["REDIS_URL"] else 1)
"""
WAITING_CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(7))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture(params=["system", "pypi"])
def strategy(request):
    try:
        find_postgres(request.param)
        find_redis(request.param)
    except ServicesError as error:
        pytest.skip(f"strategy {request.param} is not available on this machine: {error}")
    return request.param


@pytest.fixture
def unreachable(monkeypatch):
    for key, value in UNREACHABLE.items():
        monkeypatch.setenv(key, value)


def port_closed(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def cli(root, *args):
    return [sys.executable, "-m", "devtools.servers", "--root", str(root), *args]


def cli_env():
    # An outer `devtools.servers run` exports CELERY_BROKER_URL, which the inner one keeps.
    env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    return {**env, **UNREACHABLE}


def leftovers(root):
    data = root / ".data"
    pgdata = [path.parent for path in data.glob("postgres/*/PG_VERSION")]
    found = processes_in(data / "redis", "redis-server")
    return found + [pid for path in pgdata for pid in processes_in(path, "postgres")]


def recorded_pids(root):
    data = root / ".data"
    pid_files = [*data.glob("postgres/*/postmaster.pid"), data / "redis" / "redis.pid"]
    return [int(path.read_text().split()[0]) for path in pid_files]


def wait_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(pid_alive(pid) for pid in pids)


def test_starts_private_servers_that_work_and_stops_exactly_them(strategy, tmp_path, unreachable):
    with services(tmp_path, strategy) as urls:
        assert urls.started_names == {"postgres", "redis"}
        assert {server.source for server in urls.started} == {strategy}
        with psycopg.connect(urls.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.execute("CREATE TABLE notes (id int)")
        with redis.Redis.from_url(urls.redis_url) as client:
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
    for server in urls.started:
        assert not pid_alive(server.pid), server
        assert port_closed(server.port), server
    assert leftovers(tmp_path) == []


def test_a_second_run_reuses_the_data_dir(strategy, tmp_path, unreachable):
    with services(tmp_path, strategy) as first, psycopg.connect(first.database_url) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    with services(tmp_path, strategy) as second, psycopg.connect(second.database_url) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
    assert [s.home for s in first.started] == [s.home for s in second.started]


def test_a_data_dir_in_use_by_another_run_is_refused(tmp_path, unreachable):
    with (
        services(tmp_path),
        pytest.raises(ServicesError, match=f"in use by .* run \\(pid {os.getpid()}\\)"),
        services(tmp_path),
    ):
        pass


def test_reachable_urls_are_used_as_given_and_nothing_is_started(tmp_path, monkeypatch):
    # Under `devtools.servers run` these are the wrapper's; otherwise the machine's own.
    database_url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    skip_unless_reachable()
    with services(tmp_path) as urls:
        assert (urls.database_url, urls.redis_url, urls.started) == (database_url, redis_url, ())
    assert not (tmp_path / ".data").exists()


def test_unset_urls_fall_back_to_the_local_default_servers(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    skip_unless_reachable()
    with services(tmp_path) as urls, psycopg.connect(urls.database_url) as conn:
        assert urls.database_url == "postgresql://postgres@127.0.0.1:5432/aijobs"
        assert urls.redis_url == "redis://127.0.0.1:6379/0"
        assert urls.started == ()
        assert conn.execute("SELECT current_database()").fetchone() == ("aijobs",)


def skip_unless_reachable():
    postgres, redis_ = probe_postgres(), probe_redis()
    if postgres.url is None or redis_.url is None:
        pytest.skip(f"no reachable servers to reuse: {postgres.note}; {redis_.note}")


def test_run_exports_the_urls_and_returns_the_commands_exit_code(tmp_path):
    command = cli(tmp_path, "run", "--", sys.executable, "-c", CHECKING_CHILD)
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "postgres: started private" in result.stderr
    assert "redis: started private" in result.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_forwards_signals_to_the_command_and_stops_the_services(tmp_path, sig):
    launcher = subprocess.Popen(
        cli(tmp_path, "run", "--", sys.executable, "-c", WAITING_CHILD),
        cwd=PROJECT_ROOT,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout.readline() == "ready\n"
    launcher.send_signal(sig)
    assert launcher.wait(timeout=30) == 7
    launcher.stdout.close()
    assert leftovers(tmp_path) == []


def test_sigterm_during_start_up_leaves_nothing_running(tmp_path):
    sleeping_child = [sys.executable, "-c", "import time; time.sleep(30)"]
    launcher = subprocess.Popen(
        cli(tmp_path, "run", "--", *sleeping_child),
        cwd=PROJECT_ROOT,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The lock is taken just before the servers start: the signal lands while they start.
    deadline = time.monotonic() + 10
    while not (tmp_path / ".data" / "services.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("orphans_killed", [True, False], ids=["stale-pid-files", "orphans-alive"])
def test_a_run_after_the_launcher_was_sigkilled_starts_cleanly(
    tmp_path, unreachable, orphans_killed
):
    launcher = subprocess.Popen(
        cli(tmp_path, "run", "--", sys.executable, "-c", WAITING_CHILD),
        cwd=PROJECT_ROOT,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert launcher.stdout.readline() == "ready\n"
    # The launcher and its command die; the servers, in sessions of their own, live on.
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=10)
    launcher.stdout.close()
    orphans = recorded_pids(tmp_path)
    assert len(orphans) == 2
    assert all(pid_alive(pid) for pid in orphans)
    if orphans_killed:
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        assert wait_gone(orphans)

    with services(tmp_path) as urls, psycopg.connect(urls.database_url) as conn:
        assert urls.started_names == {"postgres", "redis"}
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with redis.Redis.from_url(urls.redis_url) as client:
            assert client.ping()
        assert not any(pid_alive(pid) for pid in orphans)
    assert leftovers(tmp_path) == []


def test_passwords_are_masked_in_logged_urls():
    assert (
        mask_url("postgresql://app:s3cret@db:5432/aijobs") == "postgresql://app:***@db:5432/aijobs"
    )
    assert mask_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("postgresql://app@/aijobs?host=/run/pg&password=s3cret&port=5433") == (
        "postgresql://app@/aijobs?host=/run/pg&password=***&port=5433"
    )
    assert mask_url("postgresql://app@/aijobs?host=/run/pg&port=5433") == (
        "postgresql://app@/aijobs?host=/run/pg&port=5433"
    )
