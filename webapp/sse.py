"""Server-Sent Events for one job: its status, its output as it is written, and its end.

The events come from the job's Redis stream (jobs.events): a status event is sent as the job's
JSON, read from the database when it arrives; an output event as published; done as the
finished job, and the stream ends. The stream ids are the SSE ids, so a client that reconnects
with Last-Event-ID gets what came after it, nothing lost and nothing twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse

from jobs.events import job_events_read
from jobs.models import FINISHED

# A Redis stream id; anything else in Last-Event-ID is ignored and the stream starts over.
EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
KEEPALIVE = b": keep-alive\n\n"

# The job's JSON as it is now, or None once it is gone.
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


def event_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx buffers answers by default, which would hold events back until the buffer fills.
    response["X-Accel-Buffering"] = "no"
    return response
