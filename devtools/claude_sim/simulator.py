"""The simulator's state and decisions: outcome, answer, usage and cache of each request."""

from __future__ import annotations

import collections
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from devtools.claude_sim.answers import answer_text
from devtools.claude_sim.faults import (
    MIDSTREAM_ERROR,
    Directives,
    Faults,
    digest,
    strip_directives,
)
from devtools.claude_sim.source import Source, content_text, document_of, system_blocks, user_texts

RPM_WINDOW_SECONDS = 60.0
CHARS_PER_TOKEN = 4
OUTCOMES = (
    "ok",
    "invalid",
    "429",
    "529",
    "500",
    "400",
    "401",
    "timeout",
    "rate_limited",
    MIDSTREAM_ERROR,
)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    501: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    "400": "Simulated invalid request.",
    "401": "Simulated invalid x-api-key.",
    "429": "Simulated rate limit: too many requests.",
    "500": "Simulated internal server error.",
    "529": "Simulated overload.",
}


def estimate_tokens(text: str) -> int:
    """About one token per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class SimOptions:
    """The simulator's command-line settings."""

    latency_ms: int = 0
    fault_rate: float = 0.0
    rpm: int = 0
    seed: int | None = None


@dataclass
class Stats:
    total: int = 0
    by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    in_flight: int = 0
    max_in_flight: int = 0
    disconnected: int = 0

    def record(self, outcome: str) -> None:
        self.total += 1
        self.by_outcome[outcome] += 1

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counts; requests still being answered stay in flight."""
        self.total = self.disconnected = 0
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self.max_in_flight = self.in_flight


@dataclass(frozen=True)
class Reply:
    """What to answer to one Messages request, decided on arrival."""

    status: int
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    delay_seconds: float = 0.0
    hang: bool = False
    stream: bool = False
    # Break the stream after some deltas with an `error` event, as the real API does.
    midstream_error: bool = False


class RequestError(Exception):
    """A request that cannot be served as sent; answered with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_payload(status: int, message: str, request_id: str = "") -> dict[str, Any]:
    """An Anthropic-shaped error body."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    if request_id:
        body["request_id"] = request_id
    return body


def new_request_id() -> str:
    return f"req_sim_{uuid.uuid4().hex[:24]}"


def has_credentials(headers: dict[str, str]) -> bool:
    bearer = headers.get("authorization", "")
    return bool(headers.get("x-api-key")) or (
        bearer.lower().startswith("bearer ") and bool(bearer[7:].strip())
    )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body, checked just enough to build an answer (messages, model, max_tokens)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    if not isinstance(body.get("model"), str):
        raise RequestError(400, "model: field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise RequestError(400, "max_tokens: must be a positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: at least one message is required")
    if not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "messages: each message must be an object")
    return body


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema asked for in `output_config.format` (or the older `output_format`)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None


class Simulator:
    """The simulator's state and decisions, independent of HTTP."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.stats = Stats()
        self._faults = Faults(options.fault_rate, options.seed)
        self._cached_systems: set[bytes] = set()
        self._recent: collections.deque[float] = collections.deque()

    def reset(self) -> None:
        """Zero everything but the requests still being answered."""
        self.stats.reset()
        self._faults.reset()
        self._cached_systems.clear()
        self._recent.clear()

    def stats_json(self) -> dict[str, Any]:
        return {
            **asdict(self.stats),
            "cpu_seconds": round(time.process_time(), 3),
            "options": asdict(self.options),
        }

    def decide(self, headers: dict[str, str], raw_body: bytes) -> Reply:
        """Number the request, pick its outcome, record it and build the answer."""
        request_id = new_request_id()
        outcome, reply = self._decide(headers, raw_body, request_id)
        self.stats.record(outcome)
        return reply

    def _decide(self, headers: dict[str, str], raw: bytes, request_id: str) -> tuple[str, Reply]:
        if not has_credentials(headers):
            message = "Missing API key: send x-api-key or Authorization: Bearer."
            return "401", self._error(401, message, request_id)
        try:
            body = parse_body(raw)
        except RequestError as exc:
            return "400", self._error(400, exc.message, request_id)
        retry_after = self._rpm_retry_after()
        if retry_after is not None:
            message = f"Simulated limit of {self.options.rpm} requests per minute."
            return "rate_limited", self._error(429, message, request_id, retry_after)
        texts = user_texts(body["messages"])
        directives = Directives.parse("\n".join(texts))
        outcome = self._faults.outcome(directives, texts[0] if texts else "")
        if outcome in ERROR_MESSAGES:
            return outcome, self._error(int(outcome), ERROR_MESSAGES[outcome], request_id)
        stream = body.get("stream") is True
        if outcome == MIDSTREAM_ERROR and not stream:
            # Without a stream to break, the same overload is a 529 before any output.
            return outcome, self._error(529, ERROR_MESSAGES["529"], request_id)
        latency = (
            self.options.latency_ms if directives.latency_ms is None else directives.latency_ms
        )
        reply = Reply(
            status=200,
            payload=self._message(body, texts, invalid=outcome == "invalid"),
            headers=(("request-id", request_id),),
            delay_seconds=latency / 1000,
            hang=outcome == "timeout",
            stream=stream,
            midstream_error=outcome == MIDSTREAM_ERROR,
        )
        return outcome, reply

    def _rpm_retry_after(self) -> int | None:
        """Seconds until the rpm window has room, or None when this request fits in it."""
        if self.options.rpm <= 0:
            return None
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - RPM_WINDOW_SECONDS:
            self._recent.popleft()
        if len(self._recent) >= self.options.rpm:
            return max(1, math.ceil(self._recent[0] + RPM_WINDOW_SECONDS - now))
        self._recent.append(now)
        return None

    @staticmethod
    def _error(status: int, message: str, request_id: str, retry_after: int = 0) -> Reply:
        headers = [("request-id", request_id)]
        if status == 429:
            headers.append(("retry-after", str(retry_after or 1)))
        return Reply(status, error_payload(status, message, request_id), tuple(headers))

    def _message(self, body: dict[str, Any], texts: list[str], *, invalid: bool) -> dict[str, Any]:
        blocks = system_blocks(body.get("system"))
        first = strip_directives(texts[0] if texts else "")
        instructions = "\n".join(b["text"] for b in blocks) + "\n" + first
        text = answer_text(
            requested_schema(body), Source(document_of(first), instructions), invalid
        )
        output_tokens = estimate_tokens(text)
        stop_reason = "end_turn"
        if output_tokens > body["max_tokens"]:
            text = text[: body["max_tokens"] * CHARS_PER_TOKEN]
            output_tokens, stop_reason = body["max_tokens"], "max_tokens"
        return {
            "id": f"msg_sim_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(blocks, body["messages"], output_tokens),
        }

    def _usage(
        self, blocks: list[dict[str, Any]], messages: list[dict[str, Any]], output_tokens: int
    ) -> dict[str, Any]:
        total = estimate_tokens("".join(b["text"] for b in blocks))
        total += sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
        created, read = self._cache_use(blocks)
        return {
            # As in the real API, input_tokens leaves out what the cache wrote or read.
            "input_tokens": max(total - created - read, 0),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "service_tier": "standard",
        }

    def _cache_use(self, blocks: list[dict[str, Any]]) -> tuple[int, int]:
        """Tokens (written to, read from) the cache: the system blocks up to the last marked one."""
        marked = [i + 1 for i, b in enumerate(blocks) if b.get("cache_control")]
        if not marked:
            return 0, 0
        prefix = "".join(b["text"] for b in blocks[: marked[-1]])
        key = digest(prefix)
        if key in self._cached_systems:
            return 0, estimate_tokens(prefix)
        self._cached_systems.add(key)
        return estimate_tokens(prefix), 0
