"""Output events: deltas coalesced to at most ten a second, each with what parses so far, and
a worker's calls' events sent together."""

from __future__ import annotations

import json

import pytest
import redis

from tests.integration.harness import wait_for
from workers.output import MIN_INTERVAL_SECONDS, Batcher, OutputStream, partial_output

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


# --- a worker's batcher: every call's events in one round trip --------------------------------


class Sent:
    """A publish_many that records each round trip, and answers canceled for some jobs."""

    def __init__(self, canceled: frozenset[str] = frozenset()) -> None:
        self.trips: list[list[tuple[str, dict]]] = []
        self.canceled = canceled

    def __call__(self, outputs: list[tuple[str, dict]]) -> list[bool]:
        self.trips.append(outputs)
        return [job_id in self.canceled for job_id, _ in outputs]


def batched(clock, job_id: str, batcher: Batcher, published: list) -> OutputStream:
    def publish(job_id, data) -> bool:
        published.append((job_id, data))
        return False

    return OutputStream(job_id, attempt=1, seq=0, clock=clock, publish=publish, batcher=batcher)


def test_the_events_of_every_call_go_in_one_round_trip_but_each_first_at_once(clock, published):
    sent = Sent()
    batcher = Batcher(sent)
    first, second = (batched(clock, job, batcher, published) for job in ("job-1", "job-2"))

    first.write("{")
    second.write("[")
    clock.now += MIN_INTERVAL_SECONDS
    first.write('"summary"')
    second.write('"news"')
    batcher.send_held()

    assert [(job, data["text"]) for job, data in published] == [("job-1", "{"), ("job-2", "[")]
    assert [[(job, data["text"]) for job, data in trip] for trip in sent.trips] == [
        [("job-1", '"summary"'), ("job-2", '"news"')]
    ]


def test_a_cancel_in_the_reply_stops_that_call_only(clock, published):
    batcher = Batcher(Sent(canceled=frozenset({"job-2"})))
    first, second = (batched(clock, job, batcher, published) for job in ("job-1", "job-2"))
    for output in (first, second):
        output.write("{")
    clock.now += MIN_INTERVAL_SECONDS
    for output in (first, second):
        output.write('"summary"')
    batcher.send_held()

    assert first.write(": ") is True
    assert second.write(": ") is False


def test_the_last_event_goes_at_once_with_what_the_batcher_still_held(clock, published):
    sent = Sent()
    batcher = Batcher(sent)
    output = batched(clock, "job-1", batcher, published)
    text = json.dumps(ANSWER)
    for piece in pieces(text):
        output.write(piece)
        clock.now += 0.01
    batcher.send_held()
    clock.now += MIN_INTERVAL_SECONDS
    output.write(" ")  # held by the batcher with the rest, never sent by it
    output.flush()

    (_, first), (_, last) = published
    batched_texts = [data["text"] for trip in sent.trips for _, data in trip]
    assert len(batched_texts) == 1, "what came between the first and the send, as one event"
    assert first["text"] + batched_texts[0] + last["text"] == text + " ", (
        "each piece once, in order"
    )
    assert last["partial"] == ANSWER
    assert batcher.withdraw(output) == ""


def test_redis_refusing_a_round_trip_stops_the_events_of_its_calls(clock, published):
    def unreachable(outputs) -> list[bool]:
        raise redis.ConnectionError("Redis is away")

    batcher = Batcher(unreachable)
    output = batched(clock, "job-1", batcher, published)
    output.write("{")
    clock.now += MIN_INTERVAL_SECONDS
    output.write('"summary"')
    batcher.send_held()

    clock.now += MIN_INTERVAL_SECONDS
    assert output.write(": ") is True, "the answer is still read"
    output.flush()
    assert [data["text"] for _, data in published] == ["{"]


def test_the_batchers_thread_sends_what_is_held(clock, published):
    sent = Sent()
    batcher = Batcher(sent, interval=0.001)
    output = batched(clock, "job-1", batcher, published)
    output.write("{")
    clock.now += MIN_INTERVAL_SECONDS
    output.write('"summary"')

    wait_for(lambda: sent.trips, timeout=5, what="the batcher's round trip")
    assert [data["text"] for _, data in sent.trips[0]] == ['"summary"']
