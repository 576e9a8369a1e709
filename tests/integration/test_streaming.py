"""A job's events while a real worker streams its answer from the simulator: output as it is
written, a status per state, a stream broken midway and retried, a cancel that cuts a stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pydantic_core
import pytest

from jobs.events import job_events_read
from jobs.models import ProviderCall
from tests.helpers import unique
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STORY = (
    "The harbour town voted to rebuild its old lighthouse. Volunteers raised the money in a year. "
    "The lamp was lit again on a stormy night in October, and fishing boats came home safely. "
    "The keeper's cottage became a small museum, and visitors climb the tower on summer evenings."
)

Entry = tuple[str, str, dict[str, Any]]


def read_events(
    job_id: str, until: Callable[[list[Entry]], bool], *, after: str | None = None
) -> list[Entry]:
    """The job's events, read as a listener does (blocking reads, each after the last id seen),
    until `until` holds for them; fails after 30 s."""

    async def listen() -> list[Entry]:
        seen: list[Entry] = []
        last = after
        deadline = time.monotonic() + 30
        while not until(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"events of job {job_id} so far: {seen}")
            batch = await job_events_read(job_id, last, 500)
            if batch:
                seen += batch
                last = batch[-1][0]
        return seen

    return asyncio.run(listen())


def done(entries: list[Entry]) -> bool:
    return any(event == "done" for _, event, _ in entries)


def statuses(entries: list[Entry]) -> list[str]:
    return [data["status"] for _, event, data in entries if event == "status"]


def outputs(entries: list[Entry], **call: int) -> list[dict[str, Any]]:
    matching = [data for _, event, data in entries if event == "output"]
    return [data for data in matching if all(data[key] == value for key, value in call.items())]


def test_a_listener_sees_the_output_as_it_is_written_and_a_status_per_state(api, worker):
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:latency=1500]]")}).body["id"]

    entries = read_events(job_id, done)

    job = api.request("GET", f"/jobs/{job_id}").body
    assert job["status"] == "succeeded"
    assert statuses(entries) == ["queued", "running", "succeeded"]
    assert [event for _, event, _ in entries][-2:] == ["status", "done"]
    written = outputs(entries)
    assert len(written) >= 3, "the output came in several events before the job was done"
    first_output = next(i for i, (_, event, _) in enumerate(entries) if event == "output")
    assert statuses(entries[:first_output]) == ["queued", "running"]
    text = "".join(data["text"] for data in written)
    assert pydantic_core.from_json(text) == job["result"]
    assert written[-1]["partial"] == job["result"]
    # The summary grew as it was written: some event shows part of it.
    partial_summaries = [(data["partial"] or {}).get("summary", "") for data in written]
    assert any(0 < len(summary) < len(job["result"]["summary"]) for summary in partial_summaries)


def test_a_stream_broken_midway_is_retried_and_its_reported_usage_recorded(api, worker):
    text = unique(f"{STORY} [[sim:midstream-error]] [[sim:latency=300]]")
    job_id = api.submit("summarize", {"text": text}).body["id"]

    entries = read_events(job_id, done)

    job = api.request("GET", f"/jobs/{job_id}").body
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert statuses(entries) == ["queued", "running", "retrying", "running", "succeeded"]
    broken, answered = api.calls(job_id)
    assert (broken["outcome"], broken["error"]["code"]) == ("retryable_error", "overloaded")
    assert broken["provider_request_id"].startswith("req_sim_")
    # What message_start reported: the whole input (part of it from the cache), one output token.
    assert broken["input_tokens"] + broken["cache_read_input_tokens"] > 0
    assert broken["output_tokens"] == 1
    assert float(broken["cost_usd"]) > 0
    assert answered["outcome"] == "ok"
    assert job["usage"]["output_tokens"] == 1 + answered["output_tokens"]
    assert job["usage"]["input_tokens"] == broken["input_tokens"] + answered["input_tokens"]
    # The broken attempt's text was published too; the retry's output starts over.
    assert outputs(entries, attempt=1)
    retried = "".join(data["text"] for data in outputs(entries, attempt=2))
    assert pydantic_core.from_json(retried) == job["result"]


def test_a_cancel_during_a_slow_stream_closes_it_and_keeps_the_partial_usage(
    api, worker, simulator
):
    disconnected = simulator.stats()["disconnected"]
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:latency=4000]]")}).body["id"]
    started = read_events(job_id, lambda entries: bool(outputs(entries)))

    assert api.request("POST", f"/jobs/{job_id}/cancel").status == 200
    entries = read_events(job_id, done, after=started[-1][0])

    call = wait_for(
        lambda: ProviderCall.objects.filter(job_id=job_id).exclude(outcome="pending").first(),
        timeout=30,
        what="the canceled call to be recorded",
    )
    assert (call.outcome, call.error_code) == ("permanent_error", "canceled")
    assert call.provider_request_id.startswith("req_sim_")
    assert call.input_tokens + call.cache_read_input_tokens > 0
    assert call.output_tokens == 1, "cut before message_delta reported the final count"
    # The simulator saw the worker hang up in the middle of its answer.
    wait_for(
        lambda: simulator.stats()["disconnected"] > disconnected,
        timeout=10,
        what="the simulator to see the stream closed",
    )
    job = api.request("GET", f"/jobs/{job_id}").body
    assert (job["status"], job["result"], job["attempts"]) == ("canceled", None, 1)
    assert job["usage"]["input_tokens"] == call.input_tokens
    assert Decimal(job["usage"]["cost_usd"]) > 0
    assert statuses(entries) == ["canceled"]
