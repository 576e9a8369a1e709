"""Server-Sent Events: one job's, one batch's, and a user's pulse for their lists.

A job's events come from its Redis stream (jobs.events): a status event is sent as the job's
JSON, read from the database when it arrives; an output event as published; done as the
finished job, and the stream ends. The stream ids are the SSE ids, so a client that reconnects
with Last-Event-ID gets what came after it, nothing lost and nothing twice.

A batch's stream and the lists' follow a topic's pulses instead (jobs.events): each pulse
stands for any number of item changes, and the stream reads what it shows once per wake, at
most PULSES_PER_SECOND times a second, so a 10,000-item batch costs a listener a few events a
second, not one per item. Their ids are pulse ids: a client that reconnects with Last-Event-ID
hears of what changed after it, and the batch stream never sends the same state twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse

from jobs.events import batch_topic, job_events_read, pulse_last, pulse_wait
from jobs.models import FINISHED, UNFINISHED, BatchStatus

# A Redis stream id; anything else in Last-Event-ID is ignored and the stream starts over.
EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
KEEPALIVE = b": keep-alive\n\n"

# The pace of a stream that follows pulses: at most this many reads and events a second.
PULSES_PER_SECOND = 2
BATCH_ENDED = (BatchStatus.FINISHED, BatchStatus.CANCELED)

# The job's (or batch's) JSON as it is now, or None once it is gone.
Snapshot = Callable[[], Awaitable[dict[str, Any] | None]]


def resume_after(request: HttpRequest) -> str | None:
    value = request.headers.get("Last-Event-ID", "").strip()
    return value if EVENT_ID.match(value) else None


def frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id else []
    lines += [f"event: {event}", f"data: {json.dumps(data)}"]
    return ("\n".join(lines) + "\n\n").encode()


async def job_stream(
    job_id: UUID, first: dict[str, Any], snapshot: Snapshot, after: str | None
) -> AsyncIterator[bytes]:
    """`first` (the job now, without an id: it is no event of the stream), then its events."""
    yield frame("status", first)
    keepalive_ms = int(settings.AIJOBS_SSE_KEEPALIVE_SECONDS * 1000)
    finished = first["status"] in FINISHED
    while True:
        events = await job_events_read(job_id, after, block_ms=0 if finished else keepalive_ms)
        if not events and finished:
            # Finished and its done event already read or expired with the stream: end anyway.
            yield frame("done", first)
            return
        if not events:
            yield KEEPALIVE
        for entry_id, event, data in events:
            after = entry_id
            if event == "output":
                yield frame(event, data, entry_id)
                continue
            job = await snapshot()
            if job is None:
                return
            yield frame(event, job, entry_id)
            if event == "done":
                return


async def resume_point(request: HttpRequest, topic: str) -> str | None:
    """Where a stream following `topic` starts: after Last-Event-ID, else after the newest
    pulse, read before the caller's first look at the state, so no change falls between."""
    return resume_after(request) or await pulse_last(topic)


async def batch_stream(
    batch_id: UUID, first: dict[str, Any], snapshot: Snapshot, after: str | None
) -> AsyncIterator[bytes]:
    """`first` (the batch now, without an id), then `status` (the batch) when its status
    changes, `progress` (counts, total, usage) when only they moved, and `done` at its end."""
    yield frame("status", first)
    keepalive = settings.AIJOBS_SSE_KEEPALIVE_SECONDS
    shown, sent_at = first, time.monotonic()
    while shown["status"] not in BATCH_ENDED:
        settling = _settling(shown)
        wait = settings.AIJOBS_BATCH_DISPATCH_INTERVAL if settling else keepalive
        pulse = await pulse_wait(batch_topic(batch_id), after, int(wait * 1000))
        after = pulse or after
        batch = await snapshot() if pulse or settling else shown
        if batch is None:
            return
        change = _batch_change(shown, batch)
        if change is not None:
            yield frame(*change, after)
            sent_at = time.monotonic()
        elif time.monotonic() - sent_at >= keepalive:
            yield KEEPALIVE
            sent_at = time.monotonic()
        shown = batch
        if pulse and shown["status"] not in BATCH_ENDED:
            await asyncio.sleep(1 / PULSES_PER_SECOND)
    yield frame("done", shown, after)


def _settling(batch: dict[str, Any]) -> bool:
    """A state a dispatcher's round ends without an item's pulse: queued (its first items are
    being published), or no item left to run. Looked at again every round's interval."""
    nothing_left = not any(batch["counts"][status] for status in UNFINISHED)
    return batch["status"] == BatchStatus.QUEUED or nothing_left


def _batch_change(shown: dict[str, Any], batch: dict[str, Any]) -> tuple[str, Any] | None:
    if batch["status"] != shown["status"]:
        return "status", batch
    progress = _progress(batch)
    return ("progress", progress) if progress != _progress(shown) else None


def _progress(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: batch[name] for name in ("counts", "total", "usage")}


async def pulse_stream(topic: str, after: str | None) -> AsyncIterator[bytes]:
    """A `change` event each time the topic pulses, at most PULSES_PER_SECOND a second."""
    keepalive_ms = int(settings.AIJOBS_SSE_KEEPALIVE_SECONDS * 1000)
    while True:
        pulse = await pulse_wait(topic, after, keepalive_ms)
        if pulse is None:
            yield KEEPALIVE
            continue
        after = pulse
        yield frame("change", {}, pulse)
        await asyncio.sleep(1 / PULSES_PER_SECOND)


def event_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx buffers answers by default, which would hold events back until the buffer fills.
    response["X-Accel-Buffering"] = "no"
    return response
