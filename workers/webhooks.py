"""One try at delivering a webhook message over HTTP, signed per Standard Webhooks.

The address rules are applied again at every try (DNS can change between submission and
delivery), and the request goes to the addresses they checked: the name is not resolved a
second time, and travels in the Host header and, for https, in SNI (so the certificate is
still verified for it). No redirect is followed; the whole try, however the receiver
behaves (it never answers, or trickles), ends at AIJOBS_WEBHOOK_TIMEOUT_SECONDS; at most
MAX_ANSWER_BYTES of the answer are read.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import httpx2
from django.conf import settings
from standardwebhooks import Webhook

from jobs import webhooks
from jobs.errors import InvalidInput
from jobs.webhook_secrets import signing_secrets
from jobs.webhooks import Destination, Try, TryResult

USER_AGENT = "aijobs-webhooks/1"
MAX_ANSWER_BYTES = 4096


def message_deliver(*, message_id: str, celery_task_id: str) -> str | None:
    """Make one try if the message is due and free; its status after the try, or None when
    there was nothing to try (delivered, failed, scheduled later or held by another try)."""
    held = webhooks.try_begin(message_id=message_id, celery_task_id=celery_task_id)
    if held is None:
        return None
    return webhooks.try_record(held=held, result=try_send(held))


def try_send(held: Try) -> TryResult:
    try:
        destination = webhooks.destination_resolve(held.message.url)
    except InvalidInput as exc:
        return TryResult(error=f"refused, nothing sent: {exc.message}", refused=True)
    body = held.body
    headers = signed_headers(held.message.pk, held.message.owner_id, body)
    return asyncio.run(_post(destination, body, headers))


def signed_headers(message_id: str, owner_id: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers: one signature per secret in use (two after a rotation,
    while the previous one lasts), space-separated."""
    now = datetime.now(UTC)
    signatures = " ".join(
        Webhook(secret).sign(message_id, now, body) for secret in signing_secrets(owner_id)
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # The raw answer is what is read: nothing to decompress, no bomb to defuse.
        "accept-encoding": "identity",
    }


async def _post(destination: Destination, body: str, headers: dict[str, str]) -> TryResult:
    timeout = settings.AIJOBS_WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        # One deadline for all of it: httpx's own timeouts are per read, which a receiver
        # trickling a byte at a time would never trip.
        async with asyncio.timeout(timeout):
            status, head = await _exchange(destination, body.encode(), headers)
    except TimeoutError:
        return TryResult(error=f"no answer within {timeout:g}s", latency_ms=elapsed_ms())
    except (httpx2.HTTPError, OSError) as exc:
        return TryResult(error=f"{type(exc).__name__}: {exc}", latency_ms=elapsed_ms())
    return TryResult(http_status=status, latency_ms=elapsed_ms(), response_head=head)


async def _exchange(
    destination: Destination, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    """POST to each checked address in turn until one connects; the status and the answer's
    first bytes."""
    default_port = webhooks.DEFAULT_PORTS[destination.scheme]
    host = destination.host if ":" not in destination.host else f"[{destination.host}]"
    if destination.port != default_port:
        host += f":{destination.port}"
    extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
    refused: httpx2.ConnectError | None = None
    async with httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=None) as client:
        for address in destination.addresses:
            request = client.build_request(
                "POST",
                _pinned_url(destination, address),
                content=body,
                headers={**headers, "host": host},
                extensions=extensions,
            )
            try:
                response = await client.send(request, stream=True)
            except httpx2.ConnectError as exc:
                refused = exc
                continue
            try:
                return response.status_code, await _head(response)
            finally:
                await response.aclose()
    raise refused or httpx2.ConnectError("no address to connect to")


def _pinned_url(destination: Destination, address: str) -> str:
    """The destination's URL with the checked address in place of its name."""
    literal = f"[{address}]" if ":" in address else address
    return f"{destination.scheme}://{literal}:{destination.port}{destination.path}"


async def _head(response: httpx2.Response) -> str:
    """At most MAX_ANSWER_BYTES of the answer, as text; the rest is never read."""
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= MAX_ANSWER_BYTES:
            break
    return bytes(data[:MAX_ANSWER_BYTES]).decode(errors="replace")
