"""`make demo`: the whole platform on this machine, with the Claude simulator unless a key is set.

Run under `python -m devtools.servers run --`, which provides DATABASE_URL and
REDIS_URL. Starts web (gunicorn), a Celery worker, beat, Flower (basic auth) and,
without ANTHROPIC_API_KEY, the simulator; prints the URLs, the demo user's password
and an API token; Ctrl-C (or SIGTERM) stops every process it started, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devtools.claude_sim import url_from_banner

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / ".data" / "demo"
DEMO_USER = "demo"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.2
# Slow enough to watch a job go from queued to running to succeeded in the UI.
DEFAULT_SIM_LATENCY_MS = 1500
SIMULATED_KEY = "simulated-no-real-key"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


class Stop(Exception):
    """Raised by the signal handler: leave the main loop and stop everything."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--web-port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--sim-latency-ms", type=int, default=DEFAULT_SIM_LATENCY_MS)
    parser.add_argument("--worker-concurrency", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for port in (args.web_port, args.flower_port):
        if not port_free(port):
            print(
                f"demo: port {port} is in use; stop what holds it or pass another port",
                file=sys.stderr,
            )
            return 1
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "logs").mkdir(exist_ok=True)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    children: list[Child] = []
    try:
        run_demo(args, children)
    except Stop:
        print("\ndemo: stopping ...", flush=True)
    finally:
        stop_all(children)
    return 0


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def run_demo(args: argparse.Namespace, children: list[Child]) -> None:
    env = demo_environment(args)
    if not os.environ.get("ANTHROPIC_API_KEY"):
        env["ANTHROPIC_BASE_URL"] = start_simulator(args, children, env)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    password, token = create_demo_user(env)
    env["FLOWER_BASIC_AUTH"] = f"{DEMO_USER}:{password}"
    for name, command in service_commands(args).items():
        children.append(start(name, command, env))
    web = f"http://127.0.0.1:{args.web_port}"
    wait_until(lambda: workers_ready(web), "the web app to see a worker", children)
    wait_until(lambda: not port_free(args.flower_port), "Flower to listen", children)
    print_welcome(args, password, token, simulated="ANTHROPIC_BASE_URL" in env)
    watch(children)


def demo_environment(args: argparse.Namespace) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or persistent_secret(),
        # Plain http on localhost: no https redirects, and cookies that come back.
        "DJANGO_HTTPS": "false",
        "AIJOBS_FLOWER_URL": f"http://127.0.0.1:{args.flower_port}",
    }
    if not os.environ.get("ANTHROPIC_API_KEY"):
        env.update(ANTHROPIC_API_KEY=SIMULATED_KEY, AIJOBS_SIMULATED="true")
    return env


def persistent_secret() -> str:
    """One secret per checkout, so sessions survive a restart of the demo."""
    path = DEMO_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def start_simulator(args: argparse.Namespace, children: list[Child], env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "devtools.claude_sim", "--port", "0"]
    command += ["--latency-ms", str(args.sim_latency_ms)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    children.append(Child("simulator", proc))
    print(f"demo: started simulator (pid {proc.pid})", flush=True)
    return url_from_banner(proc.stdout.readline().decode() if proc.stdout else "")


def manage(env: dict[str, str], *command: str) -> None:
    subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)


def create_demo_user(env: dict[str, str]) -> tuple[str, str]:
    """A fresh password (each run) and API token for the staff user `demo`."""
    password = secrets.token_urlsafe(12)
    script = (
        "from django.contrib.auth import get_user_model;"
        f"u, _ = get_user_model().objects.get_or_create(username={DEMO_USER!r});"
        f"u.set_password({password!r}); u.is_staff = True; u.is_superuser = True; u.save()"
    )
    manage(env, "shell", "-c", script)
    token = (
        subprocess.run(
            [sys.executable, "manage.py", "create_api_token", DEMO_USER, "--name", "demo"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return password, token


def service_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    celery = [sys.executable, "-m", "celery", "-A", "celery_app"]
    return {
        "web": [
            sys.executable, "-m", "gunicorn", "webapp.wsgi",
            f"--bind=127.0.0.1:{args.web_port}", "--workers=2", "--worker-class=gthread",
            "--threads=16", "--no-control-socket", "--access-logfile=-",
        ],
        "worker": [
            *celery, "worker", "-P", "threads", "-c", str(args.worker_concurrency),
            "-n", "demo@%h", "-l", "INFO",
        ],
        "beat": [*celery, "beat", "-l", "INFO", "-s", str(DEMO_DIR / "celerybeat-schedule")],
        "flower": [*celery, "flower", "--address=127.0.0.1", f"--port={args.flower_port}"],
    }  # fmt: skip


def start(name: str, command: list[str], env: dict[str, str]) -> Child:
    """Start a child in its own session, so Ctrl-C reaches only us and we stop it in order."""
    with (DEMO_DIR / "logs" / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    print(f"demo: started {name} (pid {proc.pid})", flush=True)
    return Child(name, proc)


def workers_ready(web: str) -> bool:
    try:
        with urllib.request.urlopen(f"{web}/api/v1/health", timeout=3) as answer:
            return bool(json.load(answer)["workers"])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(ready: Callable[[], bool], what: str, children: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        exited(children)
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {READY_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def exited(children: list[Child]) -> None:
    for child in children:
        if child.proc.poll() is not None:
            log = DEMO_DIR / "logs" / f"{child.name}.log"
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {log}")


def watch(children: list[Child]) -> None:
    """Wait for Ctrl-C; a child that dies on its own ends the demo too."""
    while True:
        exited(children)
        time.sleep(POLL_INTERVAL)


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
        print(f"demo: stopped {child.name} (pid {child.proc.pid})", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def print_welcome(args: argparse.Namespace, password: str, token: str, *, simulated: bool) -> None:
    web = f"http://127.0.0.1:{args.web_port}"
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
        f"  Admin       {web}/admin/",
        f"  API token   {token}",
        f"  Logs        {DEMO_DIR / 'logs'}/",
        "",
        "Try first: log in, open 'New job', pick classify, and watch it run.",
        "Or from a shell:",
        f"  curl -s -X POST {web}/api/v1/jobs -H 'Authorization: Bearer {token}' \\",
        "    -H 'Content-Type: application/json' -H 'Prefer: wait=30' \\",
        '    -d \'{"kind": "summarize", "input": {"text": "Any text. It will be summarized."}}\'',
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
