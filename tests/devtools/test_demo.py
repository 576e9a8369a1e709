"""The `make demo` launcher: it all comes up and answers, a restart keeps the session and the
token, Ctrl-C pressed twice stops every process it started, and the README's API walkthrough
works when pasted into a shell next to it."""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from devtools.demo import (
    ENV_FILE,
    PASSWORD_FILE,
    TOKEN_FILE,
    WEBHOOK_SECRET_FILE,
    group_members,
    port_free,
)
from devtools.servers import free_port, pid_alive
from tests.integration.harness import database_url, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README_PORT = "127.0.0.1:8000"
README_DATA_DIR = ".data/demo"
README_RECEIVER = "127.0.0.1:8025"
# The port of the README's own signature-checking receiver.
README_CHECK_PORT = "8026"
# curl's answers end without a newline, so what is printed next (an event stream, the README's
# receiver's line) starts on the answer's line.
GLUED = re.compile(r"^(.*[}\]])(event: |verified )", re.MULTILINE)


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
    """The demo as `make demo` runs it (under devtools.servers), in a process group of its
    own, on ports chosen free and a data directory of the test's."""

    def __init__(self, database: str, data_dir: Path, ports: tuple[int, int, int]) -> None:
        self.web_port, self.flower_port, self.webhook_port = ports
        self.data_dir = data_dir
        env = {**os.environ, "DATABASE_URL": database}
        env.pop("ANTHROPIC_API_KEY", None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.servers", "run", "--",
             sys.executable, "-m", "devtools.demo", "--web-port", str(self.web_port),
             "--flower-port", str(self.flower_port), "--webhook-port", str(self.webhook_port),
             "--sim-latency-ms", "100",
             "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.output: list[str] = []
        self.read_until("Ctrl-C stops everything", timeout=120)

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def receiver(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}"

    def read_until(self, start: str, *, timeout: float) -> None:
        def line_starts() -> bool:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError("demo exited:\n" + "".join(self.output))
            self.output.append(line)
            return line.startswith(start)

        wait_for(line_starts, timeout=timeout, what=f"the demo to print {start!r}")

    def value(self, pattern: str) -> str:
        return re.search(pattern, "".join(self.output)).group(1)

    def child_pids(self) -> list[int]:
        return [
            int(pid) for pid in re.findall(r"started [\w-]+ \(pid (\d+)\)", "".join(self.output))
        ]

    def press_ctrl_c_twice(self) -> str:
        """SIGINT to the whole group, and again as soon as the demo says it is stopping."""
        os.killpg(self.proc.pid, signal.SIGINT)
        self.read_until("demo: stopping", timeout=30)
        os.killpg(self.proc.pid, signal.SIGINT)
        rest, _ = self.proc.communicate(timeout=90)
        return "".join(self.output) + rest


def stop_and_check_nothing_is_left(demo: Demo) -> None:
    pids = demo.child_pids()
    sim_port = int(demo.value(r"started simulator \(pid \d+\) on http://127\.0\.0\.1:(\d+)"))
    output = demo.press_ctrl_c_twice()

    assert demo.proc.returncode == 0, output
    assert "still stopping" in output, "the second Ctrl-C came while stopping"
    assert "Traceback" not in output, output
    assert len(pids) == 7, "simulator, web, two workers, beat, flower, the webhook receiver"
    assert [pid for pid in pids if pid_alive(pid)] == [], output
    # Each child leads a group of its own (gunicorn's workers are in the web's).
    assert [group_members(pgid) for pgid in [demo.proc.pid, *pids]] == [[]] * 8, output
    ports = (demo.web_port, demo.flower_port, demo.webhook_port, sim_port)
    assert all(port_free(port) for port in ports)
    assert not (demo.data_dir / ENV_FILE).exists()


def opener(jar: http.cookiejar.CookieJar | None = None) -> urllib.request.OpenerDirector:
    handlers = [urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)]
    return urllib.request.build_opener(*handlers)


def get(
    url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener().open(request, timeout=40) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()


def flower_lists_the_worker(flower: str, password: str) -> bool:
    basic = base64.b64encode(f"demo:{password}".encode()).decode()
    status, workers = get(f"{flower}/api/workers?refresh=1", {"Authorization": f"Basic {basic}"})
    assert status == 200
    return any(name.startswith("demo@") for name in json.loads(workers))


def exercise(demo: Demo, token: str, password: str, run: int) -> None:
    """A job over the API with the token, and Flower behind the password."""
    assert "SIMULATED" in "".join(demo.output)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Prefer": "wait=30",
    }
    body = json.dumps(
        {"kind": "summarize", "input": {"text": f"Demo run {run}. It works."}}
    ).encode()
    status, answer = get(f"{demo.web}/api/v1/jobs", headers, body)
    assert status == 201
    assert json.loads(answer)["status"] == "succeeded"

    flower = f"http://127.0.0.1:{demo.flower_port}"
    assert get(f"{flower}/api/workers")[0] == 401
    wait_for(
        lambda: flower_lists_the_worker(flower, password),
        timeout=30,
        what="Flower to list the worker",
    )


def log_in(web: str, password: str) -> http.cookiejar.CookieJar:
    """Sign in through the login form, as a browser does; the jar holds the session."""
    jar = http.cookiejar.CookieJar()
    with opener(jar).open(f"{web}/login/", timeout=10) as page:
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode())
    form = {"username": "demo", "password": password, "csrfmiddlewaretoken": csrf.group(1)}
    with opener(jar).open(f"{web}/login/", urllib.parse.urlencode(form).encode(), 10):
        pass
    assert signed_in(web, jar)
    return jar


def signed_in(web: str, jar: http.cookiejar.CookieJar) -> bool:
    with opener(jar).open(f"{web}/", timeout=10) as page:
        return "/login/" not in page.geturl()


def active_demo_tokens(database: str) -> int:
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT count(*) FROM jobs_apitoken t JOIN auth_user u ON u.id = t.user_id"
            " WHERE u.username = 'demo' AND t.revoked_at IS NULL"
        ).fetchone()[0]


def test_a_restart_keeps_the_session_and_token_and_ctrl_c_twice_stops_it_all(
    demo_database_url, tmp_path
):
    data_dir, ports = tmp_path / "demo", (free_port(), free_port(), free_port())
    demo = Demo(demo_database_url, data_dir, ports)
    try:
        token = demo.value(r"API token\s+(\S+)")
        password = demo.value(r"password (\S+) \(web UI")
        assert (data_dir / TOKEN_FILE).read_text() == token
        assert (data_dir / PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
        assert (data_dir / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
        assert (data_dir / WEBHOOK_SECRET_FILE).stat().st_mode & 0o777 == 0o600
        assert (data_dir / WEBHOOK_SECRET_FILE).read_text().startswith("whsec_")
        assert f"Webhooks    {demo.receiver}/" in "".join(demo.output)
        assert get(f"{demo.receiver}/received.json") == (200, b"[]")
        assert f"TOKEN=$(cat {data_dir / TOKEN_FILE})" in "".join(demo.output)
        exercise(demo, token, password, run=1)
        session = log_in(demo.web, password)
    finally:
        stop_and_check_nothing_is_left(demo)

    demo = Demo(demo_database_url, data_dir, ports)  # a second run needs no cleanup
    try:
        assert demo.value(r"password (\S+) \(web UI") == password
        assert demo.value(r"API token\s+(\S+)") == token
        assert active_demo_tokens(demo_database_url) == 1
        assert signed_in(demo.web, session), "the session of the first run still works"
        exercise(demo, token, password, run=2)
    finally:
        stop_and_check_nothing_is_left(demo)


def readme_shell_blocks(heading: str) -> str:
    """The ```sh blocks of README.md's section `heading`, before its next heading."""
    blocks, block, section, fence = [], [], False, None
    for line in (ROOT / "README.md").read_text().splitlines():
        if fence is None and line.startswith("#"):
            section = line == heading
        elif line.startswith("```"):
            if fence == "sh" and section:
                blocks.append("\n".join(block))
            fence, block = (line[3:].strip() if fence is None else None), []
        elif fence is not None:
            block.append(line)
    assert blocks, f"README.md has no ```sh blocks under {heading!r}"
    return "\n".join(blocks)


def json_values(text: str) -> list[Any]:
    """Every JSON value curl printed, one after another (its answers end without a newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while True:
        at += len(text[at:]) - len(text[at:].lstrip())
        if at == len(text):
            return values
        value, at = decoder.raw_decode(text, at)
        values.append(value)


def unglued(output: str) -> str:
    return GLUED.sub("\\1\n\\2", output)


def sse_and_json(output: str) -> tuple[list[list[dict[str, str]]], list[Any]]:
    """What the commands printed: the event streams (each a list of frames, each frame its
    fields, a stream ending at `done`), and the JSON values and other lines after them."""
    streams: list[list[dict[str, str]]] = [[]]
    frame: dict[str, str] = {}
    rest = []
    for line in unglued(output).splitlines():
        name, colon, value = line.partition(": ")
        if colon and name in ("id", "event", "data"):
            frame[name] = value
        elif line.startswith(":"):
            continue  # a keep-alive comment
        elif frame and not line:
            streams[-1].append(frame)
            if frame.get("event") == "done":
                streams.append([])
            frame = {}
        elif line:
            rest.append(line)
    return [stream for stream in streams if stream], json_values("\n".join(rest))


def run_readme(
    script: str, demo: Demo, data_dir: Path, out: Path
) -> subprocess.CompletedProcess[str]:
    """The README's commands as a user pastes them in the checkout, pointed at this demo's ports
    and files; what they write (results.csv) goes to `out`. Whatever they start in the
    background is stopped with them (the shell leads a process group of its own)."""
    # Written for the default ports and data directory; this demo has its own.
    script = script.replace(README_PORT, f"127.0.0.1:{demo.web_port}")
    script = script.replace(README_RECEIVER, f"127.0.0.1:{demo.webhook_port}")
    script = script.replace(README_DATA_DIR, str(data_dir))
    script = script.replace("-o results.csv", f"-o {out / 'results.csv'}")
    shell = subprocess.Popen(
        ["bash", "-c", f"set -euo pipefail\n{script}"],
        cwd=ROOT,
        env={**os.environ, "DEMO_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate()
    return subprocess.CompletedProcess(shell.args, shell.returncode, stdout, stderr)


def test_the_readme_api_walkthrough_works_next_to_a_running_demo(demo_database_url, tmp_path):
    api = readme_shell_blocks("## The JSON API")
    streaming = readme_shell_blocks("### Streaming and events")
    batches = readme_shell_blocks("### Batches")
    assert README_PORT in api
    assert f"{README_DATA_DIR}/{TOKEN_FILE}" in api
    data_dir = tmp_path / "demo"
    demo = Demo(demo_database_url, data_dir, (free_port(), free_port(), free_port()))
    try:
        # Each part continues the same shell session as the first, with its TOKEN and JOB_ID.
        walkthrough = run_readme(f"{api}\n{streaming}", demo, data_dir, tmp_path)
        batch_walk = run_readme(f"{api}\n{batches}", demo, data_dir, tmp_path)
    finally:
        stop_and_check_nothing_is_left(demo)
    assert walkthrough.returncode == 0, walkthrough.stderr
    (whole, resumed), (job,) = sse_and_json(walkthrough.stdout)
    assert job["status"] == "succeeded", job
    assert job["kind"] == "classify"
    events = [frame["event"] for frame in whole]
    assert events[0] == "status"
    assert "id" not in whole[0], "the job as it is when the client connects"
    assert "output" in events, "the model's text as it was written"
    assert events.index("output") < events.index("done") == len(events) - 1
    assert json.loads(whole[-1]["data"]) == job, "done carries the final job"
    ids = [frame["id"] for frame in whole[1:]]
    assert [frame.get("id") for frame in resumed[1:]] == ids[1:], "after Last-Event-ID only"
    assert batch_walk.returncode == 0, batch_walk.stderr
    (batch_stream,), (*_, uploaded, batch) = sse_and_json(batch_walk.stdout)
    assert batch_stream[-1]["event"] == "done", "the batch's stream ends with done"
    assert json.loads(batch_stream[-1]["data"])["status"] == "finished"
    assert (batch["kind"], batch["total"]) == ("classify", 2), batch
    assert uploaded["kind"] == "classify", uploaded
    assert uploaded["total"] > 2, uploaded
    results = (tmp_path / "results.csv").read_text().splitlines()
    assert len(results) == 3, results
    assert results[0].startswith("custom_id,job_id,status")
    assert [row.split(",")[0] for row in results[1:]] == ["t-1", "t-2"]


def received(demo: Demo) -> list[dict[str, Any]]:
    """What the demo's webhook receiver got, oldest first."""
    status, body = get(f"{demo.receiver}/received.json")
    assert status == 200
    return list(reversed(json.loads(body)))


def secret_of(demo: Demo, token: str) -> dict[str, Any]:
    status, body = get(f"{demo.web}/api/v1/webhooks/secret", {"Authorization": f"Bearer {token}"})
    assert status == 200
    return json.loads(body)


def test_the_readme_webhooks_work_and_verify_next_to_a_running_demo(demo_database_url, tmp_path):
    api = readme_shell_blocks("## The JSON API")
    webhooks = readme_shell_blocks("### Webhooks")
    assert README_RECEIVER in webhooks
    assert f"{README_DATA_DIR}/{WEBHOOK_SECRET_FILE}" in webhooks
    # The README's own receiver listens on the port it names; this run takes a free one.
    webhooks = webhooks.replace(README_CHECK_PORT, str(free_port()))
    data_dir = tmp_path / "demo"
    demo = Demo(demo_database_url, data_dir, (free_port(), free_port(), free_port()))
    try:
        token = demo.value(r"API token\s+(\S+)")
        before = secret_of(demo, token)["secret"]
        walk = run_readme(f"{api}\n{webhooks}", demo, data_dir, tmp_path)
        assert walk.returncode == 0, walk.stderr
        printed = unglued(walk.stdout).splitlines()
        checked = [line for line in printed if line.startswith("verified ")]
        _, (_job, deliveries, refused, redelivered) = sse_and_json(
            "\n".join(line for line in printed if line not in checked)
        )
        started, completed = sorted(
            deliveries["items"], key=lambda item: item["type"], reverse=True
        )
        assert (started["type"], completed["type"]) == ("job.started", "job.completed")
        assert started["job_id"] == completed["job_id"]
        # Three POSTs, in any order: the two events, and the started one again.
        expected = sorted([started["id"], completed["id"], started["id"]])
        wait_for(
            lambda: sorted(item["webhook_id"] for item in received(demo)) == expected,
            timeout=30,
            what="the receiver to get both events and the redelivered one",
        )
        arrived = received(demo)
        rotated = secret_of(demo, token)
    finally:
        stop_and_check_nothing_is_left(demo)
    assert all(item["verified"] for item in arrived), arrived
    bodies = {item["body"] for item in arrived if item["webhook_id"] == started["id"]}
    assert len(bodies) == 1, "a redeliver sends the same bytes"
    assert [line.split()[2:] for line in checked] == [["job.completed", "succeeded"]], checked
    assert refused["error"]["details"][0]["loc"] == ["webhook"], refused
    assert (redelivered["id"], redelivered["status"]) == (started["id"], "pending")
    assert rotated["secret"] != before
    assert rotated["previous_expires_at"] is not None
    assert (data_dir / WEBHOOK_SECRET_FILE).read_text().strip() == rotated["secret"]
