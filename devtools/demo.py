"""`make demo`: the whole platform on this machine, with the Claude simulator unless a key is set.

Run under `python -m devtools.servers run --`, which provides DATABASE_URL and
REDIS_URL. Starts web (gunicorn with uvicorn workers, as docker-compose runs it), a Celery
worker for single jobs and one for batches' items, beat, Flower (basic auth), a webhook
receiver (devtools.webhook_receiver, which verifies what the demo user's webhooks send)
and, without ANTHROPIC_API_KEY, the simulator; prints the URLs, the demo user's password
and API token. Ctrl-C (or SIGTERM) stops every process it started, by PID; pressed again
meanwhile, it is noted and the stopping goes on.

The data directory (default .data/demo) keeps what a restart reuses: the secret key,
the demo user's password and API token (so sessions and the token survive), the logs
and beat's schedule. It also holds the demo user's webhook signing secret, written at each
start for the receiver, which reads it on every request. While the demo runs it also holds
`env`, the settings a shell needs to reach the demo's database (`make token` sources it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devtools.claude_sim import url_from_banner
from devtools.servers import stop_processes
from devtools.web import web_command

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT / ".data" / "demo"
SECRET_KEY_FILE = "secret_key"
PASSWORD_FILE = "password"
TOKEN_FILE = "api-token"
WEBHOOK_SECRET_FILE = "webhook-secret"
ENV_FILE = "env"
DEMO_USER = "demo"
DEMO_TOKEN_NAME = "demo"
# What a shell next to the demo needs to run manage.py against the demo's database.
SHELL_ENV_KEYS = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_SECRET_KEY",
    "DJANGO_HTTPS",
    "AIJOBS_QUEUE",
    "AIJOBS_BATCH_QUEUE",
    "AIJOBS_REDIS_PREFIX",
)
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
KILL_TIMEOUT = 5.0
POLL_INTERVAL = 0.2
# Shorter than STOP_TIMEOUT: gunicorn's default (30 s) would outlast it for a long poll or
# an event stream.
WEB_GRACEFUL_TIMEOUT = 5
# Slow enough to watch a job go from queued to running to succeeded in the UI.
DEFAULT_SIM_LATENCY_MS = 1500
SIMULATED_KEY = "simulated-no-real-key"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The batch worker runs on the CPU the rest leaves: at nice 19 its weight is 1.5% of theirs
# (PERFORMANCE.md, h).
BATCH_WORKER_NICE = 19


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None  # None: its errors go to our stderr


class Stop(Exception):
    """A stop was requested: leave the start-up or the watch and stop everything."""


class DemoError(Exception):
    """The demo cannot go on (a child failed); the message says why and where to look."""


class StopRequests:
    """SIGINT and SIGTERM ask the demo to stop; the handler never raises.

    The demo checks between steps (`check`), so no step is cut half-way (a child started
    but not yet recorded), and stopping, which checks nothing, runs to its end: a second
    Ctrl-C is only noted, and what outlives the deadline is killed.
    """

    def __init__(self) -> None:
        self.received = 0

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received += 1
        if self.received > 1:
            # os.write, not print: a handler that prints while the main code prints raises.
            note = f"demo: still stopping; what is left after {STOP_TIMEOUT:.0f} s is killed\n"
            os.write(2, note.encode())

    def check(self) -> None:
        if self.received:
            raise Stop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--web-port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--webhook-port", type=int, default=8025, help="the webhook receiver's")
    parser.add_argument("--sim-latency-ms", type=int, default=DEFAULT_SIM_LATENCY_MS)
    parser.add_argument("--worker-concurrency", type=int, default=32)
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: %(default)s"
    )
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    stop = StopRequests()
    stop.install()
    args = parse_args(argv)
    problem = port_problem(args)
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1
    (args.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        run_demo(args, children, stop)
    except Stop:
        print("\ndemo: stopping ...", flush=True)
    except DemoError as error:
        print(f"demo: {error}; stopping ...", file=sys.stderr, flush=True)
        return 1
    finally:
        stop_all(children)
        (args.data_dir / ENV_FILE).unlink(missing_ok=True)
    return 0


def port_problem(args: argparse.Namespace) -> str | None:
    """Why a port the demo listens on can't be used, naming the way to choose another; or None."""
    ports = {"web": args.web_port, "Flower": args.flower_port, "webhooks": args.webhook_port}
    if len(set(ports.values())) < len(ports):
        return (
            f"web, Flower and the webhook receiver need three ports, not {sorted(ports.values())}"
        )
    for name, port in ports.items():
        if not port_free(port):
            return (
                f"port {port} ({name}) is in use on 127.0.0.1: stop what holds it, or choose "
                "other ports: make demo WEB_PORT=8001 FLOWER_PORT=5556 WEBHOOK_PORT=8026 (or "
                "pass --web-port, --flower-port and --webhook-port to python -m devtools.demo)"
            )
    return None


def run_demo(args: argparse.Namespace, children: list[Child], stop: StopRequests) -> None:
    stop.check()
    env = demo_environment(args)
    if not os.environ.get("ANTHROPIC_API_KEY"):
        env["ANTHROPIC_BASE_URL"] = start_simulator(args, children, env)
    for command in (("migrate", "--noinput"), ("collectstatic", "--noinput")):
        manage(env, stop, *command, "-v", "0")
    prepare = f"from devtools.demo import prepare_demo_user as p; p({str(args.data_dir)!r})"
    manage(env, stop, "shell", "-v", "0", "-c", prepare)
    password = (args.data_dir / PASSWORD_FILE).read_text().strip()
    env["FLOWER_BASIC_AUTH"] = f"{DEMO_USER}:{password}"
    write_private(args.data_dir / ENV_FILE, shell_env(env))
    for name, command in service_commands(args, env).items():
        children.append(start(name, command, env, args.data_dir))
    web = f"http://127.0.0.1:{args.web_port}"
    wait_until(lambda: workers_ready(web), "the web app to see a worker", stop, children)
    wait_until(lambda: listening(args.flower_port), "Flower to listen", stop, children)
    wait_until(
        lambda: listening(args.webhook_port), "the webhook receiver to listen", stop, children
    )
    print_welcome(args, password, simulated="ANTHROPIC_BASE_URL" in env)
    watch(children, stop)


def demo_environment(args: argparse.Namespace) -> dict[str, str]:
    secret = os.environ.get("DJANGO_SECRET_KEY") or read_or_create(
        args.data_dir / SECRET_KEY_FILE, lambda: secrets.token_urlsafe(48)
    )
    queue = os.environ.get("AIJOBS_QUEUE") or "aijobs"
    env = {
        **os.environ,
        # Named here, not left to the settings' defaults: the workers' -Q need them.
        "AIJOBS_QUEUE": queue,
        "AIJOBS_BATCH_QUEUE": os.environ.get("AIJOBS_BATCH_QUEUE") or f"{queue}-batch",
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        # The same key every run, so sessions survive a restart of the demo.
        "DJANGO_SECRET_KEY": secret,
        # Plain http on localhost: no https redirects, and cookies that come back.
        "DJANGO_HTTPS": "false",
        "AIJOBS_FLOWER_URL": f"http://127.0.0.1:{args.flower_port}",
        # The demo's webhooks go to its receiver on this machine, over plain http.
        "AIJOBS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        # Half the batch worker's slots while single jobs are about, as .env.example says.
        "AIJOBS_BATCH_MAX_IN_FLIGHT": os.environ.get("AIJOBS_BATCH_MAX_IN_FLIGHT")
        or str(args.worker_concurrency // 2),
    }
    if not os.environ.get("ANTHROPIC_API_KEY"):
        env.update(ANTHROPIC_API_KEY=SIMULATED_KEY, AIJOBS_SIMULATED="true")
    return env


def read_or_create(path: Path, new: Callable[[], str]) -> str:
    """The secret kept in path; a new one, written for the next run, if there is none."""
    if not path.exists():
        write_private(path, new())
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write text to path, readable by its owner only: it holds a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT


def shell_env(env: dict[str, str]) -> str:
    lines = [f"{key}={shlex.quote(env[key])}" for key in SHELL_ENV_KEYS if env.get(key)]
    return "".join(f"{line}\n" for line in lines)


def prepare_demo_user(data_dir: str) -> None:
    """Inside Django (`manage.py shell`): the staff user `demo`, with the password and API
    token kept in data_dir, so a restart neither logs anyone out nor adds a token, and its
    webhook signing secret written there for the receiver."""
    from django.contrib.auth import get_user_model

    from jobs.models import ApiToken
    from jobs.tokens import api_token_authenticate, api_token_create, api_token_revoke
    from jobs.webhook_secrets import secret_for

    folder = Path(data_dir)
    password = read_or_create(folder / PASSWORD_FILE, lambda: secrets.token_urlsafe(12))
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USER)
    if not user.check_password(password):
        # Only when it changed: a new hash (new salt) would end the sessions of the last run.
        user.set_password(password)
    user.is_staff = user.is_superuser = user.is_active = True
    user.save()
    # Written every start: the secret may have been rotated on the Webhooks page since.
    write_private(folder / WEBHOOK_SECRET_FILE, secret_for(user).secret)
    token_path = folder / TOKEN_FILE
    if token_path.exists() and api_token_authenticate(token_path.read_text().strip()) == user:
        return
    for old in ApiToken.objects.filter(user=user, name=DEMO_TOKEN_NAME, revoked_at__isnull=True):
        api_token_revoke(token=old)
    write_private(token_path, api_token_create(user=user, name=DEMO_TOKEN_NAME)[1])


def start_simulator(args: argparse.Namespace, children: list[Child], env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "devtools.claude_sim", "--port", "0"]
    command += ["--latency-ms", str(args.sim_latency_ms)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    children.append(Child("simulator", proc))
    url = url_from_banner(proc.stdout.readline().decode() if proc.stdout else "")
    print(f"demo: started simulator (pid {proc.pid}) on {url}", flush=True)
    return url


def manage(env: dict[str, str], stop: StopRequests, *command: str) -> None:
    """Run a manage.py command to its end; a stop request ends it early."""
    proc = subprocess.Popen([sys.executable, "manage.py", *command], cwd=ROOT, env=env)
    try:
        wait_until(lambda: proc.poll() is not None, f"manage.py {command[0]}", stop)
    finally:
        end(proc)
    if proc.returncode != 0:
        raise DemoError(f"manage.py {command[0]} failed with exit status {proc.returncode}")


def end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        stop_processes([proc.pid], signal.SIGTERM, STOP_TIMEOUT)
        proc.wait()  # reap it


def service_commands(args: argparse.Namespace, env: dict[str, str]) -> dict[str, list[str]]:
    """What the demo runs, as docker-compose.yml does: a worker for jobs submitted on their
    own, and one for batches' items at a lower CPU priority (README, "Scaling out")."""
    celery = [sys.executable, "-m", "celery", "-A", "celery_app"]
    worker = [*celery, "worker", "-P", "threads", "-c", str(args.worker_concurrency), "-l", "INFO"]
    return {
        "web": web_command(
            f"127.0.0.1:{args.web_port}",
            extra=("--access-logfile=-", f"--graceful-timeout={WEB_GRACEFUL_TIMEOUT}"),
        ),
        "worker": [*worker, "-Q", env["AIJOBS_QUEUE"], "-n", "demo@%h"],
        "batch-worker": [
            "nice", "-n", str(BATCH_WORKER_NICE),
            *worker, "-Q", env["AIJOBS_BATCH_QUEUE"], "-n", "demo-batch@%h",
        ],
        "beat": [*celery, "beat", "-l", "INFO", "-s", str(args.data_dir / "celerybeat-schedule")],
        "flower": [*celery, "flower", "--address=127.0.0.1", f"--port={args.flower_port}"],
        "webhooks": [
            sys.executable, "-m", "devtools.webhook_receiver", "--port", str(args.webhook_port),
            "--secret-file", str(args.data_dir / WEBHOOK_SECRET_FILE),
        ],
    }  # fmt: skip


def start(name: str, command: list[str], env: dict[str, str], data_dir: Path) -> Child:
    """Start a child in its own session, so Ctrl-C reaches only us and we stop it in order."""
    log_path = data_dir / "logs" / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    print(f"demo: started {name} (pid {proc.pid})", flush=True)
    return Child(name, proc, log_path)


def workers_ready(web: str) -> bool:
    try:
        with urllib.request.urlopen(f"{web}/api/v1/health", timeout=3) as answer:
            return bool(json.load(answer)["workers"])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(
    ready: Callable[[], bool], what: str, stop: StopRequests, children: Sequence[Child] = ()
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        stop.check()
        exited(children)
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {READY_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def exited(children: Sequence[Child]) -> None:
    for child in children:
        if child.proc.poll() is not None:
            where = shown(child.log) if child.log else "its output above"
            raise DemoError(f"{child.name} exited with {child.proc.returncode}; see {where}")


def watch(children: list[Child], stop: StopRequests) -> None:
    """Wait for Ctrl-C; a child that dies on its own ends the demo too."""
    while True:
        stop.check()
        exited(children)
        time.sleep(POLL_INTERVAL)


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child at once, then wait for each and what it started to exit."""
    for child in reversed(children):
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        stop_group(child, deadline)
        print(f"demo: stopped {child.name} (pid {child.proc.pid})", flush=True)


def stop_group(child: Child, deadline: float) -> None:
    """Wait for child and its process group (gunicorn's workers, say) to be gone; SIGKILL the
    group at the deadline. The group id is the child's PID, as it leads a session of its own."""
    if group_gone(child, deadline):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, signal.SIGKILL)
    child.proc.wait()
    if not group_gone(child, time.monotonic() + KILL_TIMEOUT):
        left = group_members(child.proc.pid)
        print(f"demo: {child.name}'s processes {left} survived SIGKILL", file=sys.stderr)


def group_gone(child: Child, deadline: float) -> bool:
    while child.proc.poll() is None or group_members(child.proc.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def group_members(pgid: int) -> list[int]:
    """PIDs of live processes (zombies aside) in process group pgid, from /proc."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Fields after the parenthesised name: state, ppid, pgrp, ...
            state, _, pgrp = (proc / "stat").read_text().rpartition(")")[2].split()[:3]
            if int(pgrp) == pgid and state not in ("Z", "X"):
                members.append(int(proc.name))
    return members


def port_free(port: int) -> bool:
    """True if a server may listen on 127.0.0.1:port now (as gunicorn does, SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def shown(path: Path) -> str:
    """path as a user would type it: relative to the working directory when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def print_welcome(args: argparse.Namespace, password: str, *, simulated: bool) -> None:
    web = f"http://127.0.0.1:{args.web_port}"
    receiver = f"http://127.0.0.1:{args.webhook_port}"
    token_path = args.data_dir / TOKEN_FILE
    mode = (
        "SIMULATED: ANTHROPIC_API_KEY is unset, so jobs run against the Claude simulator."
        if simulated
        else "LIVE: jobs run against Claude with your ANTHROPIC_API_KEY (they cost money)."
    )
    lines = [
        "",
        "aijobs demo is running.",
        f"  {mode}",
        "",
        f"  Login       user {DEMO_USER}, password {password} (web UI, admin and Flower)",
        f"  Web UI      {web}/",
        f"  API docs    {web}/api/v1/docs",
        f"  Flower      http://127.0.0.1:{args.flower_port}/",
        f"  Webhooks    {receiver}/ (a receiver that verifies them: use {receiver}/hooks)",
        f"  API token   {token_path.read_text().strip()} (in {shown(token_path)})",
        f"  Logs        {shown(args.data_dir / 'logs')}/",
        "",
        'The README\'s API walkthrough ("The JSON API") starts with:',
        f"  TOKEN=$(cat {shlex.quote(shown(token_path))})",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
