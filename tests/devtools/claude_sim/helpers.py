"""Starting the simulator and talking to it: the real SDK, and plain HTTP for its control side."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anthropic
import pytest
from anthropic.types import Message
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "sk-test-not-a-key"
MODEL = "claude-sim-test"
DEADLINE_SECONDS = 10.0
LISTENING_RE = re.compile(r"^claude_sim listening on (http://127\.0\.0\.1:\d+)$")
# Plain HTTP to the simulator's control endpoints, never through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_simulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.claude_sim", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=DEADLINE_SECONDS)
    except queue.Empty:
        stop_simulator(proc)
        pytest.fail("the simulator did not print its listening line in time")
    match = LISTENING_RE.match(line.strip())
    if match is None:
        stop_simulator(proc)
        pytest.fail(f"unexpected first line from the simulator: {line!r}")
    return proc, match.group(1)


def stop_simulator(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_json(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with HTTP.open(request, timeout=DEADLINE_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stats(url: str) -> dict[str, Any]:
    return http_json(url + "/_sim/stats")[1]


def wait_for_stats(url: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the statistics until `condition` holds, failing at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        current = stats(url)
        if condition(current):
            return current
        time.sleep(0.02)
    pytest.fail(f"statistics never matched: {stats(url)}")


def job_text(body: str) -> str:
    """A job text with a unique word, so its directive counters are its own."""
    return f"{body}\nJob {uuid.uuid4().hex}."


def user_turn(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def create(client: anthropic.Anthropic, text: str, **kwargs: Any) -> Message:
    return client.messages.create(model=MODEL, max_tokens=1024, messages=user_turn(text), **kwargs)


class Classification(BaseModel):
    labels: list[Literal["sports", "politics", "technology"]] = Field(min_length=1, max_length=1)
    confidence: float = Field(ge=0, le=1)
    rationale: str


POLITICS_TEXT = (
    "<document>The parliament passed the election law after a long political debate. "
    "Politics dominated the week.</document>\nLabels: sports, politics, technology."
)
NEWS_TEXT = (
    "The council approved the new budget on Monday. Taxes will not rise this year. "
    "Schools and roads get more money. The vote was close."
)
