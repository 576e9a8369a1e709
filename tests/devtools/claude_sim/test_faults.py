"""Fault directives, counted per job text."""

from __future__ import annotations

import threading
from typing import Any

import anthropic
import pydantic
import pytest
from anthropic.types import Message

from devtools.claude_sim import Directives
from tests.devtools.claude_sim.helpers import (
    DEADLINE_SECONDS,
    MODEL,
    POLITICS_TEXT,
    Classification,
    create,
    http_json,
    job_text,
    stats,
    user_turn,
    wait_for_stats,
)


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


def test_reset_zeroes_the_directive_counters(client, sim) -> None:
    text = job_text("Hello. [[sim:500*1]]")
    with pytest.raises(anthropic.InternalServerError):
        create(client, text)

    http_json(sim + "/_sim/reset", method="POST")

    with pytest.raises(anthropic.InternalServerError):
        create(client, text)
    assert stats(sim)["total"] == 1


def test_directive_ranges_are_cumulative_and_a_repeated_directive_counts_once() -> None:
    directives = Directives.parse("[[sim:429*2]] [[sim:invalid*1]] [[sim:429*2]] [[sim:latency=5]]")

    outcomes = [directives.outcome_for(k) for k in range(1, 5)]

    assert outcomes == ["429", "429", "invalid", "ok"]
    assert directives.latency_ms == 5
