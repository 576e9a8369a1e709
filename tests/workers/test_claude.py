"""How provider errors are classified (retry or fail, and for how long to wait), and streamed
calls against the simulator: what they record, how they end early."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from jobs import kinds
from jobs.usage import Usage
from tests.helpers import unique
from tests.integration.harness import TEST_API_KEY, wait_for
from workers import claude
from workers.claude import ClaudeError, _error_from, retry_after_seconds

REQUEST = httpx2.Request("POST", "http://claude.test/v1/messages")


def status_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    response = httpx2.Response(
        status, headers={"request-id": "req_1", **(headers or {})}, request=REQUEST
    )
    body = {"type": "error", "error": {"type": "x", "message": f"status {status}"}}
    return anthropic.Anthropic(
        api_key="sk-test-unit", base_url="http://claude.test"
    )._make_status_error(f"status {status}", body=body, response=response)


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "rate_limited", True),
        (529, "overloaded", True),
        (500, "provider_error", True),
        (502, "provider_error", True),
        (503, "provider_error", True),
        (504, "provider_error", True),
        (520, "provider_error", True),
        (599, "provider_error", True),
        (501, "provider_error", False),
        (505, "provider_error", False),
        (408, "provider_rejected", True),
        (409, "provider_rejected", True),
        (422, "provider_rejected", False),
        (400, "bad_request", False),
        (401, "provider_auth_failed", False),
        (403, "provider_permission_denied", False),
        (404, "model_not_found", False),
        (413, "request_too_large", False),
    ],
)
def test_status_errors_are_classified(status, code, retryable):
    error = _error_from(status_error(status), latency_ms=12)

    assert isinstance(error, ClaudeError)
    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert error.request_id == "req_1"
    assert f"status {status}" in error.message


def test_timeouts_and_connection_errors_are_retryable():
    timeout = _error_from(anthropic.APITimeoutError(request=REQUEST), latency_ms=3000)
    refused = _error_from(anthropic.APIConnectionError(request=REQUEST), latency_ms=1)

    assert (timeout.code, timeout.retryable) == ("timeout", True)
    assert (refused.code, refused.retryable) == ("connection_error", True)


def test_retry_after_header_is_carried():
    assert _error_from(status_error(429, {"retry-after": "7"}), latency_ms=1).retry_after == 7.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers, seconds):
    assert retry_after_seconds(httpx2.Headers(headers)) == seconds


# --- streamed calls, against the simulator over HTTP -------------------------------------------

STORY = (
    "The harbour town rebuilt its lighthouse after the winter storms. Volunteers raised the "
    "money in a year, and the keeper's cottage became a small museum about the coast. Fishing "
    "boats now come home by its light again, and visitors climb the tower on summer evenings."
)


@pytest.fixture
def sim(simulator, settings, monkeypatch):
    """Calls go to the session's simulator, through a client made for it."""
    settings.ANTHROPIC_BASE_URL = simulator.url
    settings.ANTHROPIC_API_KEY = TEST_API_KEY
    monkeypatch.setattr(claude, "_client", None)
    return simulator


def summarize(text: str, on_text=None) -> claude.Reply:
    kind = kinds.get_kind("summarize")
    job_input = kind.Input(text=text)
    return claude.call(
        model=kind.DEFAULT_MODEL,
        system=kind.SYSTEM_PROMPT,
        messages=[{"role": "user", "content": kind.build_prompt(job_input)}],
        output_model=kind.output_model(job_input),
        max_tokens=kind.MAX_TOKENS,
        on_text=on_text,
    )


def listener(pieces: list[str], *, stop_after: int | None = None):
    def on_text(delta: str) -> bool:
        pieces.append(delta)
        return stop_after is None or len(pieces) < stop_after

    return on_text


def test_a_streamed_call_records_what_a_plain_call_records(sim):
    text = unique(STORY)
    plain = summarize(text)
    pieces: list[str] = []

    streamed = summarize(text, on_text=listener(pieces))

    assert len(pieces) > 1
    assert "".join(pieces) == streamed.text == plain.text
    assert streamed.output is not None, "validated with the job's output model"
    assert streamed.output.model_dump() == plain.output.model_dump()
    assert streamed.stop_reason == plain.stop_reason == "end_turn"
    assert streamed.request_id.startswith("req_sim_")
    assert streamed.request_id != plain.request_id
    assert streamed.usage.output_tokens == plain.usage.output_tokens > 1
    # The cache was written by the first call at the latest, and read by the second.
    assert streamed.usage.cache_read_input_tokens > 0
    total_input = [
        reply.usage.input_tokens
        + reply.usage.cache_creation_input_tokens
        + reply.usage.cache_read_input_tokens
        for reply in (plain, streamed)
    ]
    assert total_input[0] == total_input[1] > 0
    assert streamed.latency_ms > 0


def test_an_invalid_streamed_answer_comes_back_with_its_validation_errors(sim):
    reply = summarize(unique(f"{STORY} [[sim:invalid*1]]"), on_text=listener([]))

    assert reply.output is None
    assert reply.validation_errors
    assert reply.usage.output_tokens > 0


def test_a_stream_broken_midway_is_retryable_and_keeps_the_reported_usage(sim):
    pieces: list[str] = []

    with pytest.raises(ClaudeError) as caught:
        summarize(unique(f"{STORY} [[sim:midstream-error]]"), on_text=listener(pieces))

    error = caught.value
    assert pieces, "the stream broke after some text"
    assert (error.code, error.retryable, error.status) == ("overloaded", True, 529)
    assert "overloaded_error" in error.message
    assert error.request_id.startswith("req_sim_")
    # message_start's report: the input (cached or not) and the first output token.
    assert error.usage.input_tokens + error.usage.cache_read_input_tokens > 0
    assert error.usage.output_tokens == 1


def test_a_listener_that_stops_closes_the_stream_and_keeps_the_reported_usage(sim):
    before = sim.stats()["disconnected"]
    pieces: list[str] = []

    text = unique(f"{STORY} [[sim:latency=20000]]")

    with pytest.raises(ClaudeError) as caught:
        summarize(text, on_text=listener(pieces, stop_after=1))

    error = caught.value
    assert (error.code, error.retryable) == (claude.CANCELED, False)
    assert len(pieces) == 1
    assert error.usage.input_tokens + error.usage.cache_read_input_tokens > 0
    assert error.request_id.startswith("req_sim_")
    # The simulator saw the client hang up in the middle of its answer.
    wait_for(
        lambda: sim.stats()["disconnected"] > before, timeout=10, what="the stream to be closed"
    )


def test_a_stream_slower_than_the_timeout_is_cut_off_and_retryable(sim, settings):
    settings.AIJOBS_CLAUDE_TIMEOUT = 1.0

    with pytest.raises(ClaudeError) as caught:
        summarize(unique(f"{STORY} [[sim:latency=2500]]"), on_text=listener([]))

    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert caught.value.usage.output_tokens == 1


@pytest.mark.parametrize(
    ("error_type", "code", "retryable", "status"),
    [
        ("overloaded_error", "overloaded", True, 529),
        ("api_error", "provider_error", True, 500),
        ("rate_limit_error", "rate_limited", True, 429),
        ("invalid_request_error", "bad_request", False, 400),
        ("something_new", "provider_error", True, 500),
    ],
)
def test_an_error_event_in_a_stream_is_classified_by_its_type(error_type, code, retryable, status):
    response = httpx2.Response(200, headers={"request-id": "req_2"}, request=REQUEST)
    body = {"type": "error", "error": {"type": error_type, "message": "broke"}}
    exc = anthropic.Anthropic(
        api_key="sk-test-unit", base_url="http://claude.test"
    )._make_status_error("broke", body=body, response=response)

    error = _error_from(exc, latency_ms=5, usage=Usage(input_tokens=9))

    assert (error.code, error.retryable, error.status) == (code, retryable, status)
    assert error.usage == Usage(input_tokens=9)
    assert error.request_id == "req_2"


def test_a_connection_lost_in_a_stream_is_retryable():
    lost = _error_from(httpx2.RemoteProtocolError("peer closed"), latency_ms=5)
    stalled = _error_from(httpx2.ReadTimeout("read timed out"), latency_ms=5)

    assert (lost.code, lost.retryable) == ("connection_error", True)
    assert (stalled.code, stalled.retryable) == ("timeout", True)
