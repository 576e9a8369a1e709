"""How provider errors are classified: retry or fail, and for how long to wait."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

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
