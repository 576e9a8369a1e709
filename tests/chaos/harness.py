"""A whole private stack for fault tests: its own PostgreSQL and Redis (so they can be
restarted), gunicorn, beat, workers and the simulator, all real processes stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devtools.servers import PrivateServer, free_port, start_private
from tests.integration.harness import (
    ROOT,
    TEST_API_KEY,
    ApiClient,
    Simulator,
    Worker,
    stop_process,
    wait_for,
)

TERMINAL = ("succeeded", "failed", "canceled")
# Enough of each process's log to see what it did last when a wait times out.
LOG_TAIL_LINES = 40
# In every job's text: it must never show up in a log.
CANARY = f"CANARY{uuid.uuid4().hex}"
# Fast reconciliation, so a test sees the reaper act within seconds.
STACK_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
    "AIJOBS_REAPER_INTERVAL": "1",
    "AIJOBS_REQUEUE_AFTER": "5",
    "AIJOBS_SUBMISSIONS_PER_MINUTE": "0",
}


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    postgres: PrivateServer
    redis: PrivateServer
    simulator: Simulator
    processes: list[subprocess.Popen] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    api: ApiClient | None = None
    stranger: ApiClient | None = None

    @classmethod
    def start(cls, *, sim_args: tuple[str, ...] = (), **settings: str) -> Stack:
        # Not under pytest's tmp: every pytest session resets its base folder to
        # mode 0700, which would lock PostgreSQL (running as `postgres`) out mid-test.
        (ROOT / ".data").mkdir(exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="chaos-", dir=ROOT / ".data"))
        postgres, redis_ = start_private("postgres", root), start_private("redis", root)
        simulator = Simulator.start(*sim_args)
        session = f"chaos-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            **STACK_SETTINGS,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis_.url,
            "CELERY_BROKER_URL": settings.pop("CELERY_BROKER_URL", redis_.url),
            "ANTHROPIC_BASE_URL": simulator.url,
            "ANTHROPIC_API_KEY": TEST_API_KEY,
            "AIJOBS_QUEUE": session,
            "AIJOBS_REDIS_PREFIX": session,
            **settings,
        }
        stack = cls(root=root, env=env, postgres=postgres, redis=redis_, simulator=simulator)
        stack._start_platform()
        return stack

    def _start_platform(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        token, stranger = (self.new_token(name) for name in ("chaos", "stranger"))
        port = free_port()
        self.spawn("web", [
            sys.executable, "-m", "gunicorn", "webapp.wsgi", f"--bind=127.0.0.1:{port}",
            "--workers=1", "--worker-class=gthread", "--threads=8", "--no-control-socket",
        ])  # fmt: skip
        self.spawn("beat", [
            sys.executable, "-m", "celery", "-A", "celery_app", "beat", "-l", "INFO",
            "-s", str(self.root / "celerybeat-schedule"),
        ])  # fmt: skip
        self.api = ApiClient(base_url=f"http://127.0.0.1:{port}", token=token)
        self.stranger = ApiClient(base_url=f"http://127.0.0.1:{port}", token=stranger)
        wait_for(self._web_up, timeout=60, what="gunicorn to answer")

    def _web_up(self) -> bool:
        try:
            return self.api.request("GET", "/health").status in (200, 503)
        except OSError:
            return False

    def new_token(self, username: str) -> str:
        return self.manage("create_api_token", username, "--create-user").strip().splitlines()[-1]

    def logs(self) -> str:
        """Everything the stack's processes wrote."""
        return "".join(path.read_text(errors="replace") for path in self.root.glob("*.log"))

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of each process's log, for a failure's message: the stack and its
        logs are gone once the module's tests end."""
        return "".join(
            f"\n--- {path.name} (last {lines} lines)\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.root.glob("*.log"))
        )

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(proc)
        return proc

    def start_worker(self, concurrency: int = 8) -> Worker:
        name = f"w{len(self.workers)}-{uuid.uuid4().hex[:4]}@chaos"
        worker = Worker(
            name=name, log_path=self.root / f"{name}.log", env=self.env, concurrency=concurrency
        )
        self.workers.append(worker)
        return worker.start()

    def start_workers(self, count: int) -> list[Worker]:
        """Workers started side by side, so none has the queue to itself for long."""
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(lambda _: self.start_worker(), range(count)))

    def restart(self, server: PrivateServer) -> PrivateServer:
        """Stop a private server and start it again on the same port (Redis comes back empty)."""
        server.stop()
        fresh = start_private(server.name, self.root, port=server.port)
        setattr(self, server.name, fresh)
        return fresh

    @contextmanager
    def down(self, server: PrivateServer) -> Iterator[None]:
        server.stop()
        yield
        setattr(self, server.name, start_private(server.name, self.root, port=server.port))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def calls_of(self, job_id: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT attempt, seq, outcome, error_code FROM jobs_providercall WHERE job_id = %s "
            "ORDER BY attempt, seq",
            (job_id,),
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        answer = self.api.request("GET", "/health")
        return answer.status, answer.body

    def alive_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.proc.poll() is None]

    def publish_again(self, ids: list[str], copies: int) -> None:
        """Replace the queue's messages with `copies` adjacent messages per job, so the
        copies of one job are delivered together and their claims race."""
        code = (
            "from celery_app import app\n"
            "from jobs.submission import job_enqueue\n"
            "with app.connection_for_write() as conn:\n"
            f"    conn.default_channel.queue_purge({self.env['AIJOBS_QUEUE']!r})\n"
            f"for job_id in {ids!r}:\n"
            f"    for _ in range({copies}):\n"
            "        job_enqueue(job_id=job_id)\n"
        )
        self.manage("shell", "-c", code)

    def submit_many(
        self, texts: list[str], kind: str = "summarize", client: ApiClient | None = None
    ) -> list[str]:
        ids = []
        for text in texts:
            answer = (client or self.api).submit(kind, {"text": f"{text} {CANARY}"})
            assert answer.status == 201, answer.body
            ids.append(answer.body["id"])
        return ids

    def wait_all_terminal(self, ids: list[str], timeout: float) -> None:
        def unfinished() -> list[tuple[Any, ...]]:
            return self.query(
                "SELECT id, status FROM jobs_job WHERE id = ANY(%s::uuid[]) AND status <> ALL(%s)",
                (ids, list(TERMINAL)),
            )

        try:
            wait_for(
                lambda: not unfinished(), timeout=timeout, what="every job to finish", interval=0.5
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still {unfinished()[:5]}{self.log_tails()}") from None

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for proc in reversed(self.processes):
            stop_process(proc)
        if self.env["CELERY_BROKER_URL"].startswith("amqp"):
            # A shared RabbitMQ keeps durable queues: remove this run's.
            code = (
                "from celery_app import app\n"
                "from django.conf import settings\n"
                "channel = app.connection_for_write().default_channel\n"
                "for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.AIJOBS_BATCH_QUEUE):\n"
                "    channel.queue_delete(queue)\n"
            )
            self.manage("shell", "-c", code)
        self.simulator.stop()
        self.redis.stop()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def check_invariants(stack: Stack, ids: list[str], sim_calls_before: int) -> dict[str, int]:
    """RELIABILITY-NOTES' seven invariants, for the jobs of one run; returns the status counts."""
    rows = stack.query(
        """SELECT j.id, j.status, j.result IS NOT NULL,
                  count(c.id), count(c.id) FILTER (WHERE c.outcome = 'ok'),
                  j.input_tokens, coalesce(sum(c.input_tokens), 0)
             FROM jobs_job j LEFT JOIN jobs_providercall c ON c.job_id = j.id
            WHERE j.id = ANY(%s::uuid[]) GROUP BY j.id""",
        (ids,),
    )
    assert len(rows) == len(ids), "every accepted job is stored"
    statuses: dict[str, int] = {}
    for job_id, status, has_result, _calls, ok_calls, job_tokens, call_tokens in rows:
        statuses[status] = statuses.get(status, 0) + 1
        # 1. Every job ends terminal.
        assert status in TERMINAL, f"job {job_id} ended {status}"
        # 2. At most one result, and only with the one accepted answer it came from.
        assert has_result == (status == "succeeded"), f"job {job_id}: result but {status}"
        assert ok_calls == (1 if status == "succeeded" else 0), (
            f"job {job_id} {status}: {ok_calls} accepted answers; calls: {stack.calls_of(job_id)}"
        )
        # 4. Each call's usage is counted once in the job's totals.
        assert job_tokens == call_tokens, f"job {job_id}: usage counted once"
    _check_calls_match_the_provider(stack, ids, sum(row[3] for row in rows), sim_calls_before)
    logs = stack.logs()
    # 5. Nothing was published before its commit: no worker met a message without its row.
    assert not [job_id for job_id in ids if f"job {job_id} not found" in logs]
    # 6. Neither the API key nor job text reaches a log.
    assert CANARY not in logs
    assert TEST_API_KEY not in logs
    # 7. Another user can read or change nothing of these jobs.
    for job_id in ids[:5]:
        assert stack.stranger.request("GET", f"/jobs/{job_id}").status == 404
        assert stack.stranger.request("POST", f"/jobs/{job_id}/cancel").status == 404
    return statuses


def _check_calls_match_the_provider(
    stack: Stack, ids: list[str], recorded: int, before: int
) -> None:
    """3. Every request the provider saw has its row, written before it was sent.

    A worker killed between that write and the send leaves a row (settled as
    unknown) for a request that never left: those are the only extra rows.
    """
    seen = stack.simulator.stats()["total"] - before
    cut_off = stack.query(
        "SELECT count(*) FROM jobs_providercall WHERE job_id = ANY(%s::uuid[]) "
        "AND outcome IN ('pending', 'unknown')",
        (ids,),
    )[0][0]
    assert seen <= recorded <= seen + cut_off, f"simulator saw {seen}, recorded {recorded}"
