"""The HTTP side: a minimal asyncio HTTP/1.1 server, SSE streaming, and ways to run it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from devtools.claude_sim.simulator import RequestError, SimOptions, Simulator, error_payload

# The one line printed at start; url_from_banner reads it.
BANNER = "claude_sim listening on "
DEFAULT_HOST = "127.0.0.1"
MESSAGES_PATH = "/v1/messages"
# A hung request outlives any sensible client timeout, and ends when the client hangs up.
HANG_SECONDS = 600.0
# The SDK's connection pool reuses idle connections for a few seconds; stay open much longer.
KEEPALIVE_IDLE_SECONDS = 300.0
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
# The default listen backlog (100) would refuse part of a burst of several hundred connections.
LISTEN_BACKLOG = 2048
STREAM_CHUNK_WORDS = 3
STARTUP_TIMEOUT_SECONDS = 10.0
USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
REASON_PHRASES = {529: "Overloaded"}
MIDSTREAM_ERROR_EVENT = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Simulated overload in mid-stream."},
}


def stream_pieces(text: str) -> list[str]:
    """The text cut into deltas of a few words each, whitespace kept."""
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    return [
        "".join(tokens[i : i + STREAM_CHUNK_WORDS])
        for i in range(0, len(tokens), STREAM_CHUNK_WORDS)
    ]


def sse_events(
    message: dict[str, Any], *, midstream_error: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events that stream `message`, as the real API orders them.

    With `midstream_error` the stream stops halfway through the deltas (after one at
    least) with the `error` event the real API sends when it is overloaded mid-answer.
    """
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        empty = {"type": "text", "text": ""}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        pieces = stream_pieces(block["text"])
        if midstream_error:
            events += [text_delta(index, piece) for piece in pieces[: max(len(pieces) // 2, 1)]]
            return [*events, ("error", MIDSTREAM_ERROR_EVENT)]
        events += [text_delta(index, piece) for piece in pieces]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {key: usage[key] for key in USAGE_COUNTS}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def text_delta(index: int, piece: str) -> tuple[str, dict[str, Any]]:
    delta = {"type": "text_delta", "text": piece}
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, path (without query), version and lowercase headers of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, "Malformed request line.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise RequestError(400, "Malformed header line.")
            headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1].split("?", 1)[0], parts[2], headers


def wants_keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = REASON_PHRASES.get(status, "Unknown")
    return f"HTTP/1.1 {status} {phrase}\r\n"


class Connection:
    """One client connection: reads requests, writes answers, notices a client that left."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # A byte read while watching for a hang-up belongs to the next request.
        self._pending = b""

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection between requests."""
        try:
            head = self._pending + await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # The client closed the connection: nobody to answer.
        except asyncio.LimitOverrunError:
            raise RequestError(431, "Request head too large.") from None
        self._pending = b""
        method, path, version, headers = parse_head(head)
        if "transfer-encoding" in headers:
            raise RequestError(
                501, "Chunked request bodies are not supported; send Content-Length."
            )
        body = await self._reader.readexactly(self._content_length(headers))
        return Request(method, path, headers, body, wants_keep_alive(version, headers))

    @staticmethod
    def _content_length(headers: dict[str, str]) -> int:
        raw = headers.get("content-length", "0")
        if not raw.isdigit():
            raise RequestError(400, "Invalid Content-Length.")
        if int(raw) > MAX_BODY_BYTES:
            raise RequestError(413, "Request body too large.")
        return int(raw)

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client hangs up (it gave up waiting)."""
        if seconds <= 0:
            return True
        deadline = time.monotonic() + seconds
        watcher = asyncio.ensure_future(self._reader.read(1))
        try:
            done, _ = await asyncio.wait({watcher}, timeout=seconds)
        finally:
            if not watcher.done():
                # A reader allows one waiting read at a time: let the watcher finish
                # cancelling before anyone reads the next request.
                watcher.cancel()
                await asyncio.wait({watcher})
        if not done:
            return True
        try:
            data = watcher.result()
        except OSError:
            return False
        if not data:
            return False
        # HTTP/1.1 pipelining: the next request has started; keep its byte, stop watching.
        self._pending += data
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
        return True

    async def send(
        self,
        status: int,
        payload: dict[str, Any],
        *,
        keep_alive: bool,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *headers,
        ]
        self._writer.write(self._head(status, head, keep_alive) + body)
        await self._writer.drain()

    async def send_events(
        self,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        keep_alive: bool,
        headers: Sequence[tuple[str, str]] = (),
        spread_seconds: float = 0.0,
    ) -> bool:
        """A 200 answer of server-sent events, one chunk per event, the text deltas spread
        evenly over `spread_seconds`; False as soon as the client hangs up meanwhile."""
        head = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            *headers,
        ]
        self._writer.write(self._head(200, head, keep_alive))
        deltas = sum(1 for name, _ in events if name == "content_block_delta")
        gap = spread_seconds / deltas if deltas else 0.0
        for name, data in events:
            if name == "content_block_delta" and not await self.pause(gap):
                return False
            chunk = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
            self._writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await self._writer.drain()
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()
        return True

    @staticmethod
    def _head(status: int, headers: Sequence[tuple[str, str]], keep_alive: bool) -> bytes:
        lines = [status_line(status)]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append(f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        return "".join(lines).encode("latin-1")

    def close(self) -> None:
        self._writer.close()


class SimServer:
    """Routes requests to the Simulator and keeps track of open connections."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        connection = Connection(reader, writer)
        try:
            while await self._serve_one(connection):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # The client left mid-request or went idle: nothing to answer.
        except asyncio.CancelledError:
            # Shutdown. Ending normally matters: Python 3.11's stream callback calls
            # task.exception() on a cancelled task and prints a spurious error.
            pass
        except Exception as exc:  # One bad request must not stop the server.
            report_internal_error(exc)
        finally:
            if task is not None:
                self._tasks.discard(task)
            connection.close()

    async def close_connections(self) -> None:
        """Cancel every open connection, hung requests included."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_one(self, connection: Connection) -> bool:
        """Answer one request; whether to keep the connection open for another."""
        try:
            async with asyncio.timeout(KEEPALIVE_IDLE_SECONDS):
                request = await connection.read_request()
        except RequestError as exc:
            await connection.send(
                exc.status, error_payload(exc.status, exc.message), keep_alive=False
            )
            return False
        if request is None:
            return False
        if request.path == MESSAGES_PATH and request.method == "POST":
            return await self._messages(connection, request)
        status, payload = self._control(request)
        await connection.send(status, payload, keep_alive=request.keep_alive)
        return request.keep_alive

    async def _messages(self, connection: Connection, request: Request) -> bool:
        reply = self.simulator.decide(request.headers, request.body)
        stats = self.simulator.stats  # reset() zeroes it in place, so in_flight stays right
        stats.enter()
        try:
            if reply.stream and reply.status == 200 and not reply.hang:
                # The latency is spread over the deltas, as a model writes them.
                events = sse_events(reply.payload, midstream_error=reply.midstream_error)
                if not await connection.send_events(
                    events,
                    keep_alive=request.keep_alive,
                    headers=reply.headers,
                    spread_seconds=reply.delay_seconds,
                ):
                    stats.disconnected += 1
                    return False
                return request.keep_alive
            delay = HANG_SECONDS if reply.hang else reply.delay_seconds
            if not await connection.pause(delay):
                stats.disconnected += 1
                return False
            if reply.hang:
                return False
            await connection.send(
                reply.status, reply.payload, keep_alive=request.keep_alive, headers=reply.headers
            )
            return request.keep_alive
        finally:
            stats.leave()

    def _control(self, request: Request) -> tuple[int, dict[str, Any]]:
        routes: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
            ("GET", "/_sim/stats"): self.simulator.stats_json,
            ("POST", "/_sim/reset"): self._reset,
            ("GET", "/_sim/health"): lambda: {"status": "ok"},
        }
        handler = routes.get((request.method, request.path))
        if handler is not None:
            return 200, handler()
        if any(path == request.path for _, path in routes) or request.path == MESSAGES_PATH:
            return 405, error_payload(405, f"Method {request.method} not allowed here.")
        return 404, error_payload(404, "Not found.")

    def _reset(self) -> dict[str, Any]:
        self.simulator.reset()
        return {"status": "reset"}


def report_internal_error(exc: BaseException) -> None:
    """Print where the simulator failed, not the exception's message (it may quote a request)."""
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    print(f"claude_sim: internal error {type(exc).__name__}\n{''.join(frames)}", file=sys.stderr)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_server(
    host: str,
    port: int,
    options: SimOptions,
    stop: asyncio.Event,
    on_ready: Callable[[str], None],
) -> None:
    """Serve until `stop` is set; `on_ready` gets the base URL once the port is open."""
    app = SimServer(Simulator(options))
    server = await asyncio.start_server(
        app.handle_connection, host, port, limit=MAX_HEAD_BYTES, backlog=LISTEN_BACKLOG
    )
    try:
        on_ready(base_url(host, server.sockets[0].getsockname()[1]))
        await stop.wait()
    finally:
        server.close()
        await app.close_connections()
        await server.wait_closed()


def url_from_banner(line: str) -> str:
    """The URL from the simulator's first line of output; ValueError if it is not that line.

    Launchers read the line to know the simulator is up and where (`--port 0`).
    """
    if not line.startswith(BANNER):
        raise ValueError(f"the Claude simulator did not start: {line!r}")
    return line[len(BANNER) :].strip()


def serve_in_thread(
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    latency_ms: int = 0,
    fault_rate: float = 0.0,
    rpm: int = 0,
    seed: int | None = None,
) -> tuple[str, Callable[[], None]]:
    """Start the simulator on a background thread; returns its base URL and a stop function."""
    options = SimOptions(latency_ms=latency_ms, fault_rate=fault_rate, rpm=rpm, seed=seed)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: concurrent.futures.Future[str] = concurrent.futures.Future()

    def run() -> None:
        try:
            loop.run_until_complete(run_server(host, port, options, stop, ready.set_result))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="claude_sim", daemon=True)
    thread.start()
    url = ready.result(timeout=STARTUP_TIMEOUT_SECONDS)

    def stop_server() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join()

    return url, stop_server
