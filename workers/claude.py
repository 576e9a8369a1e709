"""The only module that talks to Claude.

One call here is one HTTP request: the SDK's own retries are off, because
retries belong to the job (as Celery retries with backoff), and retrying in
both places would multiply paid attempts and hide some of them from our records.

Structured output is what `messages.parse(output_format=...)` does, in two
visible steps: the schema goes out through the SDK's own `transform_schema`,
and the answer is validated by the same Pydantic model. `parse` itself raises
on invalid output and drops the message, and with it the usage we were billed.

Answers are streamed when the caller listens to the text, and give the same
text, usage and stop reason as a plain call. The stream's events are read as
the SDK decodes them (its `Stream`, error events raised as APIStatusError) but
as plain dicts: building a typed model per event, as `messages.stream` does,
cost more CPU than the rest of a job (measured against the simulator: 3.7 ms a
call with `messages.stream`, 2.4 ms typed with `create(stream=True)`, 1.3 ms as
dicts, 1.7 ms for a plain call). A stream can also end early: the provider
breaks it with an `error` event, the connection fails, or the listener asks to
stop (the job was canceled). Either way the usage the provider reported by
then (`message_start`'s input and cache tokens, the output so far) comes with
the error, because the provider bills it.
"""

from __future__ import annotations

import email.utils
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import pydantic
from anthropic.types import Message
from django.conf import settings

from jobs.usage import TOKEN_COUNTS, Usage

# Statuses worth another attempt: a request timeout, a conflict, rate limits, and
# every 5xx (overload and server trouble) except the two that say this request can
# never be served: 501 (not implemented) and 505 (HTTP version not supported).
RETRYABLE_4XX = frozenset({408, 409, 429})
PERMANENT_5XX = frozenset({501, 505})
STATUS_CODES = {
    400: "bad_request",
    401: "provider_auth_failed",
    403: "provider_permission_denied",
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limited",
    529: "overloaded",
}
# An `error` event in a stream that began well (HTTP 200) is classified as the same
# error answered before the stream, by the status the API gives that error type.
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# The code of a call its listener stopped: the job was canceled while Claude wrote.
CANCELED = "canceled"
MESSAGES_PATH = "/v1/messages"

# Gets each piece of the answer's text as it arrives; False stops the stream.
TextListener = Callable[[str], bool]


@dataclass(frozen=True)
class Reply:
    """A call that got an answer: its output, or why the output did not validate."""

    output: pydantic.BaseModel | None
    validation_errors: str
    text: str
    usage: Usage
    request_id: str
    stop_reason: str
    latency_ms: int


class ClaudeError(Exception):
    """A call that got no usable answer; `retryable` decides between retry and failure."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        request_id: str = "",
        latency_ms: int = 0,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.request_id = request_id
        self.latency_ms = latency_ms
        # What the provider reported before a stream ended early; nothing otherwise.
        self.usage = usage or Usage()


_client: anthropic.Anthropic | None = None
_client_lock = threading.Lock()


def get_client() -> anthropic.Anthropic:
    """One client per process: it holds the connection pool every call reuses."""
    global _client
    with _client_lock:
        if _client is None:
            if not settings.ANTHROPIC_API_KEY:
                raise ClaudeError(
                    "provider_not_configured", "ANTHROPIC_API_KEY is not set", retryable=False
                )
            _client = anthropic.Anthropic(
                api_key=settings.ANTHROPIC_API_KEY,
                base_url=settings.ANTHROPIC_BASE_URL or None,
                max_retries=0,
                timeout=settings.AIJOBS_CLAUDE_TIMEOUT,
            )
        return _client


def call(
    *,
    model: str,
    system: str,
    messages: list[dict[str, Any]],
    output_model: type[pydantic.BaseModel],
    max_tokens: int,
    on_text: TextListener | None = None,
) -> Reply:
    """Send one request; raise ClaudeError unless the provider answered.

    With `on_text` the answer is streamed to it. When it returns False the stream
    is closed at once, so the provider stops writing (and billing), and the call
    raises ClaudeError CANCELED with the usage reported so far.
    """
    started = time.monotonic()
    request = {
        "model": model,
        "max_tokens": max_tokens,
        # The system prompt is the same for every job of a kind: cache it.
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
        "output_config": {"format": {"type": "json_schema", "schema": _schema_of(output_model)}},
    }
    try:
        if on_text is None:
            message = get_client().messages.create(**request)
            return _reply(
                _text_of(message),
                Usage.of(message.usage),
                message._request_id,
                message.stop_reason,
                output_model,
                _elapsed_ms(started),
            )
        # The Messages endpoint through the client's own request path (auth, timeout,
        # no retries), its events as dicts: see the module's docstring.
        stream = get_client().post(
            MESSAGES_PATH,
            body={**request, "stream": True},
            cast_to=object,
            stream=True,
            stream_cls=anthropic.Stream[object],
        )
        with stream:
            return _read(stream, on_text, output_model, started)
    except anthropic.APIError as exc:
        raise _error_from(exc, _elapsed_ms(started)) from exc


@dataclass
class _Streamed:
    """What a stream has said so far."""

    pieces: list[str] = field(default_factory=list)
    # As reported: message_start's counts, then message_delta's cumulative ones.
    counts: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""

    def take(self, event: dict[str, Any]) -> str:
        """Fold one event in; the text it adds ("" for all but text deltas)."""
        kind = event.get("type")
        if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            self.pieces.append(event["delta"]["text"])
            return event["delta"]["text"]
        if kind == "message_start":
            self.counts = dict(event["message"].get("usage") or {})
        elif kind == "message_delta":
            # Optional counts are left out of message_delta when message_start's still hold.
            self.counts.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or ""
        return ""

    @property
    def usage(self) -> Usage:
        return Usage(**{name: self.counts.get(name) or 0 for name in TOKEN_COUNTS})


def _read(
    stream: anthropic.Stream[Any],
    on_text: TextListener,
    output_model: type[pydantic.BaseModel],
    started: float,
) -> Reply:
    """The streamed answer, or ClaudeError with the usage reported before it ended early.

    The whole stream is bounded by AIJOBS_CLAUDE_TIMEOUT, as a plain call is: a
    stream trickling text slower than that must not outlive the task's time limit.
    """
    deadline = started + settings.AIJOBS_CLAUDE_TIMEOUT
    request_id = stream.response.headers.get("request-id", "")
    answer = _Streamed()

    def cut(code: str, message: str, *, retryable: bool) -> ClaudeError:
        """A stream we stop reading: the caller's `with` closes its connection."""
        return ClaudeError(
            code,
            message,
            retryable=retryable,
            status=200,
            request_id=request_id,
            latency_ms=_elapsed_ms(started),
            usage=answer.usage,
        )

    try:
        for event in stream:
            piece = answer.take(event)
            if piece and not on_text(piece):
                message = "the job was canceled while Claude wrote; the stream was closed"
                raise cut(CANCELED, message, retryable=False)
            if time.monotonic() > deadline:
                raise cut("timeout", "Claude did not finish its answer in time", retryable=True)
    except (anthropic.APIError, httpx2.TransportError) as exc:
        error = _error_from(exc, _elapsed_ms(started), usage=answer.usage, request_id=request_id)
        raise error from exc
    text = "".join(answer.pieces)
    return _reply(
        text, answer.usage, request_id, answer.stop_reason, output_model, _elapsed_ms(started)
    )


@functools.lru_cache(maxsize=512)
def _schema_of(output_model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The SDK's JSON schema for a model, built once per model (runner.py reuses models)."""
    return anthropic.transform_schema(output_model)


def _reply(
    text: str,
    usage: Usage,
    request_id: str | None,
    stop_reason: str | None,
    output_model: type[pydantic.BaseModel],
    latency_ms: int,
) -> Reply:
    try:
        output, errors = output_model.model_validate_json(text), ""
    except pydantic.ValidationError as exc:
        output, errors = None, _describe(exc)
    return Reply(
        output=output,
        validation_errors=errors,
        text=text,
        usage=usage,
        request_id=request_id or "",
        stop_reason=stop_reason or "",
        latency_ms=latency_ms,
    )


def _describe(exc: pydantic.ValidationError) -> str:
    """The validation errors without the offending values, short enough to send back."""
    lines = [
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return "\n".join(lines[:20])


def _text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _error_from(
    exc: anthropic.APIError | httpx2.TransportError,
    latency_ms: int,
    *,
    usage: Usage | None = None,
    request_id: str = "",
) -> ClaudeError:
    """The ClaudeError for an SDK error, or for a transport error in the middle of a stream
    (the SDK raises those as they come from httpx2)."""
    seen = {"latency_ms": latency_ms, "usage": usage, "request_id": request_id}
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ClaudeError("timeout", "Claude did not answer in time", retryable=True, **seen)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ClaudeError("connection_error", "could not reach Claude", retryable=True, **seen)
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc, **seen)
    return ClaudeError("provider_error", type(exc).__name__, retryable=False, **seen)


def _status_error(
    exc: anthropic.APIStatusError, *, latency_ms: int, usage: Usage | None, request_id: str
) -> ClaudeError:
    status = exc.status_code
    answered = f"Claude answered {status}"
    if status == 200:
        status = STREAM_ERROR_STATUS.get(_error_type(exc), 500)
        answered = f"Claude broke off its answer ({_error_type(exc) or 'unknown error'})"
    default = "provider_error" if status >= 500 else "provider_rejected"
    return ClaudeError(
        STATUS_CODES.get(status, default),
        f"{answered}: {_provider_message(exc)}",
        retryable=is_retryable(status),
        retry_after=retry_after_seconds(exc.response.headers),
        status=status,
        request_id=exc.request_id or request_id,
        latency_ms=latency_ms,
        usage=usage,
    )


def is_retryable(status: int) -> bool:
    if status >= 500:
        return status not in PERMANENT_5XX
    return status in RETRYABLE_4XX


def _error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_type(exc: anthropic.APIStatusError) -> str:
    kind = _error_body(exc).get("type")
    return kind if isinstance(kind, str) else ""


def _provider_message(exc: anthropic.APIStatusError) -> str:
    message = _error_body(exc).get("message")
    return message[:500] if isinstance(message, str) else type(exc).__name__


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)
