"""Real processes for integration tests: the Claude simulator and Celery workers.

Every process is started here with its PID kept, and stopped by that PID.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings

from devtools.claude_sim import url_from_banner
from devtools.web import web_command
from devtools.webhook_receiver import url_from_banner as receiver_url_from_banner

ROOT = Path(__file__).resolve().parents[2]
# gunicorn names the address it bound (a free port when asked for port 0).
LISTENING = re.compile(r"Listening at: (http://\S+)")
TEST_API_KEY = "sk-test-canary-not-a-real-key-0000"


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def database_url() -> str:
    """The URL of the database Django uses now (the test database once it exists)."""
    db = settings.DATABASES["default"]
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    host = db["HOST"] or ""
    if host.startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={host}&port={db['PORT'] or 5432}"
    return f"postgresql://{auth}@{host or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def announced(module: list[str], url_from: Callable[[str], str]) -> tuple[subprocess.Popen, str]:
    """`python -m <module...>` started, and the URL its first line of output names."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *module], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        return proc, url_from(proc.stdout.readline())
    except ValueError:
        stop_process(proc)
        raise


@dataclass
class Simulator:
    proc: subprocess.Popen
    url: str

    @classmethod
    def start(cls, *extra: str) -> Simulator:
        return cls(*announced(["devtools.claude_sim", "--port", "0", *extra], url_from_banner))

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Worker:
    """A real `celery worker` process on the session's queues and the test database."""

    name: str
    log_path: Path
    env: dict[str, str]
    concurrency: int = 8
    proc: subprocess.Popen | None = field(default=None)

    def start(self) -> Worker:
        # No -Q: a worker consumes both of the platform's queues, single jobs and batch items.
        command = [
            sys.executable, "-m", "celery", "-A", "celery_app", "worker",
            "-P", "threads", "-c", str(self.concurrency), "-n", self.name,
            "--without-gossip", "--without-mingle", "-l", "INFO",
        ]  # fmt: skip
        self.log_path.write_bytes(b"")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        # Celery logs "<name> ready." once it consumes; this works on any broker.
        wait_for(self._ready, timeout=60, what=f"worker {self.name} to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"worker {self.name} exited early:\n{self.log_path.read_text()[-3000:]}"
            )
        return f"{self.name} ready." in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class WebServer:
    """The ASGI web server as docker-compose runs it (devtools.web), on a free loopback port.

    Django's live_server is a WSGI thread server: streams and waits that hold no thread need
    this one. It reads the test database, so its tests must commit (transaction=True).
    """

    log_path: Path
    env: dict[str, str]
    workers: int = 1
    proc: subprocess.Popen | None = field(default=None)
    url: str = ""

    def start(self) -> WebServer:
        self.log_path.write_bytes(b"")
        command = web_command("127.0.0.1:0", workers=self.workers)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.url = wait_for(self._listening, timeout=60, what="the web server to listen")
        wait_for(self._answers, timeout=60, what="the web server to answer")
        return self

    def _listening(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"web server exited early:\n{self.log_path.read_text()[-3000:]}")
        found = LISTENING.search(self.log_path.read_text(errors="replace"))
        return found.group(1) if found else None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/login/", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def web_env(**overrides: str) -> dict[str, str]:
    """The tests' settings on the test database; the session's queue and Redis prefix."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
        "DATABASE_URL": database_url(),
        "AIJOBS_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "AIJOBS_REDIS_PREFIX": settings.AIJOBS_REDIS_PREFIX,
        # The worker's answers come from the simulator, so the pages say so, as in the demo.
        "AIJOBS_SIMULATED": "true",
    }
    env.update(overrides)
    return env


def worker_env(simulator_url: str, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
        "DATABASE_URL": database_url(),
        "ANTHROPIC_BASE_URL": simulator_url,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
        "AIJOBS_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
    }
    env.update(overrides)
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class ApiClient:
    """A JSON client for the API over real HTTP (the live server)."""

    base_url: str
    token: str

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.base_url}/api/v1{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=90) as answer:
                return Response(
                    answer.status,
                    {k.lower(): v for k, v in answer.headers.items()},
                    json.load(answer),
                )
        except urllib.error.HTTPError as answer:
            return Response(
                answer.code, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
            )

    def submit(self, kind: str, input: dict[str, Any], **headers: str) -> Response:
        return self.request("POST", "/jobs", {"kind": kind, "input": input}, headers=headers)

    def wait(self, job_id: str, seconds: int = 60) -> dict[str, Any]:
        """The job once finished (Prefer: wait), failing the test if it is not."""
        deadline = time.monotonic() + seconds
        while True:
            job = self.request("GET", f"/jobs/{job_id}", headers={"Prefer": "wait=10"}).body
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {seconds}s")

    def calls(self, job_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/jobs/{job_id}/calls").body


@dataclass
class Event:
    event: str
    data: Any
    id: str | None = None


def entry_id(event: Event) -> tuple[int, int]:
    """The event's id as the Redis entry id it is, to compare in the order Redis gives them."""
    milliseconds, _, sequence = event.id.partition("-")
    return int(milliseconds), int(sequence)


class EventStream:
    """A Server-Sent Events client over real HTTP: events in order, keep-alive comments too."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 15) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request(
            "GET", parts.path, headers={"Accept": "text/event-stream", **headers}
        )
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}

    def next(self) -> Event | str | None:
        """The next event, or a comment line as a string, or None when the server closed."""
        fields: dict[str, str] = {}
        while line := self.response.readline():
            text = line.decode().rstrip("\n")
            if text.startswith(":"):
                return text
            if text == "":
                if fields:
                    return Event(fields["event"], json.loads(fields["data"]), fields.get("id"))
                continue
            name, _, value = text.partition(": ")
            fields[name] = value
        return None

    def events(self, until: str | None = None) -> list[Event]:
        """Events (comments skipped) until one named `until`, or to the end of the stream."""
        found: list[Event] = []
        while (item := self.next()) is not None:
            if isinstance(item, Event):
                found.append(item)
                if item.event == until:
                    break
        return found

    def body(self) -> Any:
        return json.loads(self.response.read())

    def close(self) -> None:
        self.connection.close()


@dataclass
class WebhookReceiver:
    """devtools.webhook_receiver on a free loopback port; `extra` makes it misbehave."""

    proc: subprocess.Popen
    url: str

    @classmethod
    def start(cls, secret: str | Path, *extra: str, port: int = 0) -> WebhookReceiver:
        given = ["--secret-file", str(secret)] if isinstance(secret, Path) else ["--secret", secret]
        module = ["devtools.webhook_receiver", "--port", str(port), *given, *extra]
        return cls(*announced(module, receiver_url_from_banner))

    def received(self) -> list[dict[str, Any]]:
        """What arrived, oldest first."""
        with urllib.request.urlopen(f"{self.url}/received.json", timeout=5) as response:
            return list(reversed(json.load(response)))

    def stop(self) -> None:
        stop_process(self.proc)
