"""Many Server-Sent Event streams held open by one asyncio client: each connection is a
socket and a small task, so a thousand fit in the bench driver beside the server.

Each stream notes when it gets its first event (the job's status, sent at once) and when it
gets an output event, so the delivery delay of one published event to all of them can be
read off against the moment it was published.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

OPEN_BATCH = 100  # connections opened at once, so the server's listen backlog never overflows
READY_TIMEOUT = 60.0


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    output_at: float | None = None  # time.monotonic() of its first output event
    got_output: asyncio.Event = field(default_factory=asyncio.Event)


async def _open(url: str, path: str, headers: dict[str, str]) -> Stream:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"event stream answered {status!r}")
    return Stream(reader, writer)


async def _follow(stream: Stream) -> None:
    """Read lines until the server closes; chunked framing lines are skipped as noise."""
    while line := await stream.reader.readline():
        if line.startswith(b"event: status"):
            stream.ready.set()
        elif line.startswith(b"event: output") and stream.output_at is None:
            stream.output_at = time.monotonic()
            stream.got_output.set()


@dataclass
class Streams:
    streams: list[Stream]
    tasks: list[asyncio.Task[None]]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for stream in self.streams:
            stream.writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def wait_output(self, timeout: float) -> list[float]:
        """When each stream got its output event (those that did within the timeout)."""
        waits = [stream.got_output.wait() for stream in self.streams]
        await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=timeout)
        return [s.output_at for s in self.streams if s.output_at is not None]


async def hold(url: str, path: str, headers: dict[str, str], count: int) -> Streams:
    """`count` streams on `path`, each past its first event; raises if any cannot open."""
    streams: list[Stream] = []
    for start in range(0, count, OPEN_BATCH):
        batch = min(OPEN_BATCH, count - start)
        streams += await asyncio.gather(*(_open(url, path, headers) for _ in range(batch)))
    tasks = [asyncio.create_task(_follow(stream)) for stream in streams]
    ready = [stream.ready.wait() for stream in streams]
    await asyncio.wait_for(asyncio.gather(*ready), timeout=READY_TIMEOUT)
    return Streams(streams, tasks)
