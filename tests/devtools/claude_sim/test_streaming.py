"""Streamed answers: deltas spread over the latency, a stream broken midway, a client leaving."""

from __future__ import annotations

import time

import anthropic
import pytest

from devtools.claude_sim import Directives
from tests.devtools.claude_sim.helpers import (
    MODEL,
    NEWS_TEXT,
    create,
    job_text,
    stats,
    user_turn,
    wait_for_stats,
)


def stream(client: anthropic.Anthropic, text: str) -> anthropic.lib.streaming.MessageStream:
    return client.messages.stream(model=MODEL, max_tokens=1024, messages=user_turn(text))


def test_a_midstream_error_breaks_the_stream_after_some_deltas(client, sim) -> None:
    text = job_text(f"{NEWS_TEXT} [[sim:midstream-error]]")
    whole = create(client, job_text(NEWS_TEXT)).content[0].text
    pieces: list[str] = []

    with pytest.raises(anthropic.APIStatusError) as caught, stream(client, text) as answer:
        pieces.extend(answer.text_stream)

    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert pieces, "the stream broke before any delta"
    assert whole.startswith("".join(pieces))
    assert len("".join(pieces)) < len(whole)
    assert answer.current_message_snapshot.usage.input_tokens > 0
    assert answer.current_message_snapshot.stop_reason is None


def test_a_midstream_error_happens_once_then_the_stream_completes(client, sim) -> None:
    text = job_text(f"{NEWS_TEXT} [[sim:midstream-error]]")
    with pytest.raises(anthropic.APIStatusError), stream(client, text) as answer:
        answer.until_done()

    with stream(client, text) as answer:
        final = answer.get_final_message()

    assert final.stop_reason == "end_turn"
    assert stats(sim)["by_outcome"]["midstream-error"] == 1
    assert stats(sim)["by_outcome"]["ok"] == 1


def test_a_counted_midstream_error_breaks_that_many_streams() -> None:
    assert Directives.parse("x [[sim:midstream-error*3]]").outcome_for(3) == "midstream-error"
    assert Directives.parse("x [[sim:midstream-error*3]]").outcome_for(4) == "ok"


def test_without_a_stream_the_midstream_error_is_an_overload(client, sim) -> None:
    text = job_text(f"{NEWS_TEXT} [[sim:midstream-error]]")

    with pytest.raises(anthropic.OverloadedError):
        create(client, text)

    assert create(client, text).stop_reason == "end_turn"


def test_deltas_are_spread_over_the_latency(client, sim) -> None:
    text = job_text(f"{NEWS_TEXT} [[sim:latency=1000]]")
    arrivals: list[float] = []

    started = time.monotonic()
    with stream(client, text) as answer:
        for _ in answer.text_stream:
            arrivals.append(time.monotonic() - started)

    # The first delta comes long before the last: the answer is written, not sent at once.
    assert len(arrivals) > 3
    assert arrivals[0] < arrivals[-1] / 2


def test_a_client_that_closes_the_stream_is_counted_as_disconnected(client, sim) -> None:
    text = job_text(f"{NEWS_TEXT} [[sim:latency=3000]]")

    with stream(client, text) as answer:
        next(iter(answer.text_stream))

    current = wait_for_stats(sim, lambda s: s["in_flight"] == 0)
    assert current["disconnected"] == 1
