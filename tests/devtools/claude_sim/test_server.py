"""The HTTP side: running in a thread, headers, streaming, control endpoints, concurrency."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import anthropic
import pytest
from anthropic.types import Message

from devtools.claude_sim import serve_in_thread
from tests.devtools.claude_sim.helpers import (
    API_KEY,
    MODEL,
    NEWS_TEXT,
    POLITICS_TEXT,
    Classification,
    create,
    http_json,
    stats,
    user_turn,
)


def test_serve_in_thread_runs_the_simulator_in_process() -> None:
    url, stop = serve_in_thread(port=0, latency_ms=0)
    try:
        assert http_json(url + "/_sim/health") == (200, {"status": "ok"})
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        http_json(url + "/_sim/health")


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


def test_request_without_api_key_is_an_authentication_error(sim) -> None:
    body = json.dumps({"model": MODEL, "max_tokens": 10, "messages": user_turn("Hi.")}).encode()

    status, answer = http_json(sim + "/v1/messages", method="POST", body=body)

    assert status == 401
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "authentication_error"
    assert stats(sim)["by_outcome"]["401"] == 1


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
    # `make bench` (scenario b, the simulator in flight), not a guarantee.
    assert current["max_in_flight"] > 1
