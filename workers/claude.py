"""The only module that talks to Claude.

One call here is one HTTP request: the SDK's own retries are off, because
retries belong to the job (as Celery retries with backoff), and retrying in
both places would multiply paid attempts and hide some of them from our records.

Structured output is what `messages.parse(output_format=...)` does, in two
visible steps: the schema goes out through the SDK's own `transform_schema`,
and the answer is validated by the same Pydantic model. `parse` itself raises
on invalid output and drops the message, and with it the usage we were billed.
"""

from __future__ import annotations

import email.utils
import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

import anthropic
import pydantic
from anthropic.types import Message
from django.conf import settings

from jobs.usage import Usage

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
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.request_id = request_id
        self.latency_ms = latency_ms


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
) -> Reply:
    """Send one request; raise ClaudeError unless the provider answered."""
    started = time.monotonic()
    try:
        message = get_client().messages.create(
            model=model,
            max_tokens=max_tokens,
            # The system prompt is the same for every job of a kind: cache it.
            system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            messages=messages,
            output_config={
                "format": {
                    "type": "json_schema",
                    "schema": _schema_of(output_model),
                }
            },
        )
    except anthropic.APIError as exc:
        raise _error_from(exc, _elapsed_ms(started)) from exc
    return _reply_from(message, output_model, _elapsed_ms(started))


@functools.lru_cache(maxsize=512)
def _schema_of(output_model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The SDK's JSON schema for a model, built once per model (runner.py reuses models)."""
    return anthropic.transform_schema(output_model)


def _reply_from(message: Message, output_model: type[pydantic.BaseModel], latency_ms: int) -> Reply:
    text = _text_of(message)
    try:
        output, errors = output_model.model_validate_json(text), ""
    except pydantic.ValidationError as exc:
        output, errors = None, _describe(exc)
    return Reply(
        output=output,
        validation_errors=errors,
        text=text,
        usage=Usage.of(message.usage),
        request_id=message._request_id or "",
        stop_reason=message.stop_reason or "",
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


def _error_from(exc: anthropic.APIError, latency_ms: int) -> ClaudeError:
    if isinstance(exc, anthropic.APITimeoutError):
        return ClaudeError(
            "timeout", "Claude did not answer in time", retryable=True, latency_ms=latency_ms
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ClaudeError(
            "connection_error", "could not reach Claude", retryable=True, latency_ms=latency_ms
        )
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(exc, latency_ms)
    return ClaudeError("provider_error", type(exc).__name__, retryable=False, latency_ms=latency_ms)


def _status_error(exc: anthropic.APIStatusError, latency_ms: int) -> ClaudeError:
    status = exc.status_code
    default = "provider_error" if status >= 500 else "provider_rejected"
    return ClaudeError(
        STATUS_CODES.get(status, default),
        f"Claude answered {status}: {_provider_message(exc)}",
        retryable=is_retryable(status),
        retry_after=retry_after_seconds(exc.response.headers),
        status=status,
        request_id=exc.request_id or "",
        latency_ms=latency_ms,
    )


def is_retryable(status: int) -> bool:
    if status >= 500:
        return status not in PERMANENT_5XX
    return status in RETRYABLE_4XX


def _provider_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:500]
    return type(exc).__name__


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
