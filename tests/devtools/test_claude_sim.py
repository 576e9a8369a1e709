"""The Claude simulator, driven by the real anthropic SDK against a real subprocess.

No Django here: the simulator is a devtool the integration tests start as a process.
"""

from __future__ import annotations

import asyncio
import enum
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import pydantic
import pytest
from anthropic.types import Message
from pydantic import BaseModel, Field

from devtools.claude_sim import Directives, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="module")
def sim_process() -> Iterator[str]:
    proc, url = start_simulator("--seed", "1")
    yield url
    stop_simulator(proc)


@pytest.fixture
def sim(sim_process: str) -> str:
    """The simulator's base URL, with its statistics, counters and cache zeroed."""
    http_json(sim_process + "/_sim/reset", method="POST")
    return sim_process


@pytest.fixture
def client(sim: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=API_KEY, base_url=sim, max_retries=0) as sdk:
        yield sdk


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


class Summary(BaseModel):
    summary: str
    key_points: list[str]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class LineItem(BaseModel):
    name: str
    quantity: int = Field(ge=1, le=10)
    color: Color


class Invoice(BaseModel):
    customer: str
    invoice_number: int
    total: float
    paid: bool
    items: list[LineItem]
    note: str | None = None


POLITICS_TEXT = (
    "<document>The parliament passed the election law after a long political debate. "
    "Politics dominated the week.</document>\nLabels: sports, politics, technology."
)
NEWS_TEXT = (
    "The council approved the new budget on Monday. Taxes will not rise this year. "
    "Schools and roads get more money. The vote was close."
)


# ------------------------------------------------------------------- the process


def test_prints_one_listening_line_and_exits_cleanly_on_sigterm() -> None:
    proc, url = start_simulator()
    assert http_json(url + "/_sim/health") == (200, {"status": "ok"})

    proc.terminate()

    assert proc.wait(timeout=DEADLINE_SECONDS) == 0
    assert proc.stdout is not None
    assert proc.stdout.read() == ""


def test_serve_in_thread_runs_the_simulator_in_process() -> None:
    url, stop = serve_in_thread(port=0, latency_ms=0)
    try:
        assert http_json(url + "/_sim/health") == (200, {"status": "ok"})
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        http_json(url + "/_sim/health")


# -------------------------------------------------------------- structured output


def test_classify_shaped_parse_picks_the_label_with_most_word_overlap(client) -> None:
    message = client.messages.parse(
        model=MODEL,
        max_tokens=1024,
        messages=user_turn(POLITICS_TEXT),
        output_format=Classification,
    )

    output = message.parsed_output
    assert output.labels == ["politics"]
    assert 0 <= output.confidence <= 1
    assert output.rationale
    assert message.model == MODEL
    assert message.id.startswith("msg_sim_")
    assert message._request_id.startswith("req_sim_")


def test_summary_shaped_parse_uses_lead_sentences_within_the_word_limit(client) -> None:
    prompt = f"Summarize in at most 12 words.\n<text>{NEWS_TEXT}</text>"

    message = client.messages.parse(
        model=MODEL, max_tokens=1024, messages=user_turn(prompt), output_format=Summary
    )

    output = message.parsed_output
    assert output.summary == "The council approved the new budget on Monday."
    assert len(output.summary.split()) <= 12
    assert output.key_points
    assert all(point in NEWS_TEXT for point in output.key_points)


def test_nested_model_is_filled_from_the_text(client) -> None:
    text = "Invoice number 1234 for customer: ACME Corp, total 99.50 EUR. Two red widgets."

    output = client.messages.parse(
        model=MODEL, max_tokens=1024, messages=user_turn(text), output_format=Invoice
    ).parsed_output

    assert output.customer == "ACME Corp"
    assert output.invoice_number == 1234
    assert output.total == 99.5
    assert output.paid is False
    assert output.items
    assert all(1 <= item.quantity <= 10 and item.color is Color.RED for item in output.items)


def test_raw_response_carries_the_request_id_and_parses(client) -> None:
    raw = client.beta.messages.with_raw_response.parse(
        model=MODEL,
        max_tokens=1024,
        messages=user_turn(POLITICS_TEXT),
        output_format=Classification,
    )

    assert raw.headers["request-id"].startswith("req_sim_")
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().parsed_output.labels == ["politics"]


def test_create_without_a_schema_answers_with_the_lead_sentences(client) -> None:
    message = create(client, NEWS_TEXT)

    assert (
        message.content[0].text
        == "The council approved the new budget on Monday. Taxes will not rise this year."
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_stream_gives_the_same_text_and_usage_as_create(client) -> None:
    expected = create(client, NEWS_TEXT)

    with client.messages.stream(
        model=MODEL, max_tokens=1024, messages=user_turn(NEWS_TEXT)
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 1
    assert "".join(pieces) == expected.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == expected.usage.input_tokens
    assert final.usage.output_tokens == expected.usage.output_tokens


def test_stream_with_an_output_format_parses(client) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=1024,
        messages=user_turn(POLITICS_TEXT),
        output_format=Classification,
    ) as stream:
        final = stream.get_final_message()

    assert final.parsed_output.labels == ["politics"]


# ------------------------------------------------------------------------ usage


def test_cached_system_prompt_is_created_once_then_read(client) -> None:
    system = [
        {
            "type": "text",
            "text": "You classify texts. " * 40,
            "cache_control": {"type": "ephemeral"},
        }
    ]

    first = create(client, POLITICS_TEXT, system=system).usage
    second = create(client, POLITICS_TEXT, system=system).usage

    assert first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert second.cache_creation_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.input_tokens == first.input_tokens


def test_uncached_system_prompt_reports_no_cache_tokens(client) -> None:
    usage = create(client, POLITICS_TEXT, system="You classify texts.").usage

    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 0


# ----------------------------------------------------------------------- faults


def test_429_directive_fails_twice_then_succeeds(client, sim) -> None:
    text = job_text("Hello. [[sim:429*2]]")

    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError) as caught:
            create(client, text)
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert create(client, text).stop_reason == "end_turn"

    current = stats(sim)
    assert current["total"] == 3
    assert current["by_outcome"]["429"] == 2
    assert current["by_outcome"]["ok"] == 1


@pytest.mark.parametrize(
    ("directive", "error", "error_type"),
    [
        ("[[sim:529*1]]", anthropic.OverloadedError, "overloaded_error"),
        ("[[sim:500*1]]", anthropic.InternalServerError, "api_error"),
    ],
)
def test_server_error_directives_fail_once(client, directive, error, error_type) -> None:
    text = job_text(f"Hello. {directive}")

    with pytest.raises(error) as caught:
        create(client, text)

    assert caught.value.body["error"]["type"] == error_type
    assert create(client, text).stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("outcome", "error"),
    [("400", anthropic.BadRequestError), ("401", anthropic.AuthenticationError)],
)
def test_permanent_directives_fail_every_request(client, sim, outcome, error) -> None:
    text = job_text(f"Hello. [[sim:{outcome}]]")

    for _ in range(3):
        with pytest.raises(error):
            create(client, text)

    assert stats(sim)["by_outcome"][outcome] == 3


def test_request_without_api_key_is_an_authentication_error(sim) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 10, "messages": user_turn("Hi.")}).encode()

    status, answer = http_json(sim + "/v1/messages", method="POST", body=body)

    assert status == 401
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "authentication_error"
    assert stats(sim)["by_outcome"]["401"] == 1


def test_timeout_directive_hangs_until_the_client_gives_up(client, sim) -> None:
    text = job_text("Hello. [[sim:timeout*1]]")

    with pytest.raises(anthropic.APITimeoutError):
        create(client.with_options(timeout=1.0), text)
    assert create(client, text).stop_reason == "end_turn"

    current = wait_for_stats(sim, lambda s: s["in_flight"] == 0)
    assert current["by_outcome"]["timeout"] == 1
    assert current["by_outcome"]["ok"] == 1
    assert current["disconnected"] == 1


def test_invalid_directive_breaks_the_schema_once(client, sim) -> None:
    text = job_text(POLITICS_TEXT + " [[sim:invalid*1]]")

    def parse() -> Classification:
        return client.messages.parse(
            model=MODEL, max_tokens=1024, messages=user_turn(text), output_format=Classification
        ).parsed_output

    with pytest.raises(pydantic.ValidationError):
        parse()
    assert parse().labels == ["politics"]
    assert stats(sim)["by_outcome"]["invalid"] == 1


def test_combined_directives_count_in_order_across_a_repair_round(client, sim) -> None:
    text = job_text(POLITICS_TEXT + " [[sim:429*2]] [[sim:invalid*1]]")
    # A repair round keeps the first user message, so it shares the job's counter;
    # the directive it quotes again counts once.
    repair = [
        *user_turn(text),
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": "Fix the output. [[sim:429*2]]"},
    ]

    def parse(messages: list[dict[str, Any]]) -> Classification:
        return client.messages.parse(
            model=MODEL, max_tokens=1024, messages=messages, output_format=Classification
        ).parsed_output

    for _ in range(2):
        with pytest.raises(anthropic.RateLimitError):
            parse(user_turn(text))
    with pytest.raises(pydantic.ValidationError):
        parse(repair)
    assert parse(repair).labels == ["politics"]

    outcomes = stats(sim)["by_outcome"]
    assert (outcomes["429"], outcomes["invalid"], outcomes["ok"]) == (2, 1, 1)


def test_latency_directive_keeps_the_request_in_flight(client, sim) -> None:
    text = job_text("Hello. [[sim:latency=1000]]")
    answers: list[Message] = []
    caller = threading.Thread(target=lambda: answers.append(create(client, text)))
    caller.start()

    wait_for_stats(sim, lambda s: s["in_flight"] == 1)
    caller.join(timeout=DEADLINE_SECONDS)

    assert answers[0].stop_reason == "end_turn"
    assert stats(sim)["in_flight"] == 0


# ------------------------------------------------------------------- statistics


def test_stats_count_every_request_by_outcome(client, sim) -> None:
    create(client, "Hello.")
    with pytest.raises(anthropic.BadRequestError):
        create(client, "Hello. [[sim:400]]")

    current = stats(sim)

    assert current["total"] == 2
    assert sum(current["by_outcome"].values()) == current["total"]
    assert set(current["by_outcome"]) >= {
        "ok",
        "invalid",
        "429",
        "529",
        "500",
        "400",
        "401",
        "timeout",
        "rate_limited",
    }
    assert current["cpu_seconds"] >= 0


def test_reset_zeroes_the_directive_counters(client, sim) -> None:
    text = job_text("Hello. [[sim:500*1]]")
    with pytest.raises(anthropic.InternalServerError):
        create(client, text)

    http_json(sim + "/_sim/reset", method="POST")

    with pytest.raises(anthropic.InternalServerError):
        create(client, text)
    assert stats(sim)["total"] == 1


def test_serves_a_hundred_slow_requests_concurrently(sim) -> None:
    async def run() -> list[Message]:
        async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=sim, max_retries=0) as sdk:
            calls = [
                sdk.messages.create(
                    model=MODEL, max_tokens=256, messages=user_turn(f"Job {i}. [[sim:latency=500]]")
                )
                for i in range(100)
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(run())

    assert all(answer.stop_reason == "end_turn" for answer in answers)
    current = stats(sim)
    assert current["by_outcome"]["ok"] == 100
    # More than one at a time, however slow the machine; how many is a floor for
    # `make bench` (tests/timing_floors.py), not a guarantee.
    assert current["max_in_flight"] > 1


# ------------------------------------------------------------------- directives


def test_directive_ranges_are_cumulative_and_a_repeated_directive_counts_once() -> None:
    directives = Directives.parse("[[sim:429*2]] [[sim:invalid*1]] [[sim:429*2]] [[sim:latency=5]]")

    outcomes = [directives.outcome_for(k) for k in range(1, 5)]

    assert outcomes == ["429", "429", "invalid", "ok"]
    assert directives.latency_ms == 5
