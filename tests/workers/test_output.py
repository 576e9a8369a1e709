"""Output events: deltas coalesced to at most ten a second, each with what parses so far."""

from __future__ import annotations

import json

import pytest
import redis

from workers.output import MIN_INTERVAL_SECONDS, OutputStream, partial_output

ANSWER = {"summary": "The town rebuilt its lighthouse.", "key_points": ["Volunteers paid."]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def published():
    return []


def stream(clock, published, *, cancel_after: int | None = None) -> OutputStream:
    def publish(job_id, data) -> bool:
        published.append(data)
        return cancel_after is not None and len(published) >= cancel_after

    return OutputStream("job-1", attempt=2, seq=1, clock=clock, publish=publish)


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_deltas_arriving_fast_become_at_most_ten_events_a_second(clock, published):
    output = stream(clock, published)
    text = json.dumps(ANSWER)

    for piece in pieces(text):  # a piece every 10 ms for as long as the text lasts
        output.write(piece)
        clock.now += 0.01
    output.flush()

    seconds = len(pieces(text)) * 0.01
    assert 2 <= len(published) <= seconds / MIN_INTERVAL_SECONDS + 2
    assert "".join(event["text"] for event in published) == text
    assert published[-1]["partial"] == ANSWER
    assert {(event["attempt"], event["seq"]) for event in published} == {(2, 1)}


def test_the_first_piece_goes_out_at_once_and_slow_pieces_each_get_an_event(clock, published):
    output = stream(clock, published)

    for piece in ['{"summary"', ': "The', " town"]:
        output.write(piece)
        clock.now += MIN_INTERVAL_SECONDS

    assert [event["text"] for event in published] == ['{"summary"', ': "The', " town"]
    assert [event["partial"] for event in published] == [
        {},
        {"summary": "The"},
        {"summary": "The town"},
    ]


def test_a_flush_with_nothing_new_publishes_nothing(clock, published):
    output = stream(clock, published)
    output.write("{")
    output.flush()
    output.flush()

    assert len(published) == 1


def test_a_cancel_seen_when_publishing_stops_the_stream_and_later_output(clock, published):
    output = stream(clock, published, cancel_after=2)

    assert output.write("{") is True
    clock.now += MIN_INTERVAL_SECONDS
    assert output.write('"summary"') is False, "the job was canceled: stop reading"
    output.write(": ")
    output.flush()

    assert len(published) == 2


def test_redis_unreachable_stops_the_events_but_not_the_stream(clock):
    attempts = []

    def unreachable(job_id, data) -> bool:
        attempts.append(data)
        raise redis.ConnectionError("Redis is away")

    output = OutputStream("job-1", attempt=1, seq=0, clock=clock, publish=unreachable)
    for piece in pieces(json.dumps(ANSWER)):
        assert output.write(piece) is True
        clock.now += MIN_INTERVAL_SECONDS
    output.flush()

    assert len(attempts) == 1, "one failed publish, then no more waiting on Redis"


@pytest.mark.parametrize(
    ("text", "partial"),
    [
        ("", None),
        ("Sure! Here is the JSON:", None),
        ("{", {}),
        ('{"summary": "The cat sat', {"summary": "The cat sat"}),
        ('{"labels": ["news", "spo', {"labels": ["news", "spo"]}),
        ('{"confidence": 0.', {}),
        (json.dumps(ANSWER), ANSWER),
    ],
)
def test_partial_output_parses_what_has_been_written(text, partial):
    assert partial_output(text) == partial
