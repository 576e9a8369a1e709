"""The `make demo` launcher: it all comes up and answers; Ctrl-C stops every process it started."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from devtools.servers import free_port, pid_alive
from tests.integration.harness import database_url, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_database_url():
    """A database of its own, per run, so the demo's migrate and demo user touch nothing else,
    and two runs on one server (two checkouts, or CI beside a developer) never collide."""
    demo_database = f"aijobs_demo_test_{uuid.uuid4().hex[:8]}"
    server = settings.DATABASES["default"]
    host, port = server["HOST"] or "127.0.0.1", server["PORT"] or 5432
    admin = f"postgresql://{server['USER']}@{host}:{port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {demo_database}")
    yield database_url().rsplit("/", 1)[0] + f"/{demo_database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {demo_database} WITH (FORCE)")


class Demo:
    def __init__(self, database: str) -> None:
        self.web_port, self.flower_port = free_port(), free_port()
        env = {**os.environ, "DATABASE_URL": database}
        env.pop("ANTHROPIC_API_KEY", None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.demo", "--web-port", str(self.web_port),
             "--flower-port", str(self.flower_port), "--sim-latency-ms", "100"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.output: list[str] = []
        wait_for(self._read_until_ready, timeout=120, what="the demo to print its welcome")

    def _read_until_ready(self) -> bool:
        line = self.proc.stdout.readline()
        if not line and self.proc.poll() is not None:
            raise AssertionError("demo exited:\n" + "".join(self.output))
        self.output.append(line)
        return line.startswith("Ctrl-C stops everything")

    def value(self, pattern: str) -> str:
        return re.search(pattern, "".join(self.output)).group(1)

    def child_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", "".join(self.output))]

    def interrupt(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=60)
        return rest


def get(
    url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=40) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()


def flower_lists_the_worker(flower: str, password: str) -> bool:
    basic = base64.b64encode(f"demo:{password}".encode()).decode()
    status, workers = get(f"{flower}/api/workers?refresh=1", {"Authorization": f"Basic {basic}"})
    assert status == 200
    return any(name.startswith("demo@") for name in json.loads(workers))


def exercise(demo: Demo, run: int) -> None:
    """A job over the API with the printed token, and Flower behind the printed password."""
    token = demo.value(r"API token\s+(\S+)")
    password = demo.value(r"password (\S+) \(web UI")
    assert "SIMULATED" in "".join(demo.output)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Prefer": "wait=30",
    }
    body = json.dumps(
        {"kind": "summarize", "input": {"text": f"Demo run {run}. It works."}}
    ).encode()
    status, answer = get(f"http://127.0.0.1:{demo.web_port}/api/v1/jobs", headers, body)
    assert status == 201
    assert json.loads(answer)["status"] == "succeeded"

    flower = f"http://127.0.0.1:{demo.flower_port}"
    assert get(f"{flower}/api/workers")[0] == 401
    wait_for(
        lambda: flower_lists_the_worker(flower, password),
        timeout=30,
        what="Flower to list the worker",
    )


def test_demo_runs_the_platform_and_ctrl_c_stops_it_all(demo_database_url):
    for run in (1, 2):  # a second run works without any cleanup
        demo = Demo(demo_database_url)
        try:
            exercise(demo, run)
        finally:
            pids = demo.child_pids()
            rest = demo.interrupt()
        assert demo.proc.returncode == 0, rest
        assert len(pids) == 5, "simulator, web, worker, beat and flower"
        assert not [pid for pid in pids if pid_alive(pid)], rest
