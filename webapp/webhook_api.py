"""The webhook endpoints under /api/v1/webhooks: the signing secret and the delivery log.

The secret is a credential: it is sent only in the answers of the two secret endpoints, marked
not to be stored by caches, and never logged or put into an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from jobs import selectors, webhooks
from jobs.models import DeliveryStatus, WebhookAttempt, WebhookEvent, WebhookMessage, WebhookSecret
from jobs.presenters import timestamp
from jobs.webhook_secrets import previous_until, secret_for, secret_rotate
from webapp.api import ERRORS, respond

router = Router(tags=["webhooks"])
# Neither a browser nor a proxy keeps a copy of an answer holding the secret.
NOT_STORED = {"Cache_Control": "no-store"}


# --- schemas ------------------------------------------------------------------------


class SecretOut(Schema):
    secret: str = Field(description="whsec_...: verify each webhook's signature with it")
    previous_expires_at: datetime | None = Field(
        description="after a rotation, until when the secret it replaced signs alongside it"
    )


class TryOut(Schema):
    attempt: int
    created_at: datetime
    http_status: int | None = Field(description="the receiver's answer; null when none came")
    error: str | None = Field(description="why the try failed, when it did")
    latency_ms: int
    response_head: str = Field(description="the first characters of the receiver's answer")


class DeliveryOut(Schema):
    id: str = Field(description="the webhook-id header of every try of this message")
    type: WebhookEvent
    url: str
    status: DeliveryStatus
    attempts: int
    job_id: UUID | None
    batch_id: UUID | None
    created_at: datetime = Field(description="when the event happened (the body's timestamp)")
    next_attempt_at: datetime | None = Field(description="the next try, while pending")
    delivered_at: datetime | None
    tries: list[TryOut]


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None


class DeliveryFilters(Schema):
    status: DeliveryStatus | None = None
    limit: int = Field(default=20, ge=1, le=selectors.MAX_PAGE)
    cursor: str | None = None


# --- presentation -------------------------------------------------------------------


def present_secret(secret: WebhookSecret) -> dict[str, Any]:
    return {"secret": secret.secret, "previous_expires_at": timestamp(previous_until(secret))}


def present_try(attempt: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "created_at": timestamp(attempt.created_at),
        "http_status": attempt.http_status,
        "error": attempt.error or None,
        "latency_ms": attempt.latency_ms,
        "response_head": attempt.response_head,
    }


def present_delivery(message: WebhookMessage) -> dict[str, Any]:
    pending = message.status == DeliveryStatus.PENDING
    return {
        "id": message.id,
        "type": message.type,
        "url": message.url,
        "status": message.status,
        "attempts": message.attempts,
        "job_id": str(message.job_id) if message.job_id else None,
        "batch_id": str(message.batch_id) if message.batch_id else None,
        "created_at": timestamp(message.created_at),
        "next_attempt_at": timestamp(message.next_attempt_at) if pending else None,
        "delivered_at": timestamp(message.delivered_at),
        "tries": [present_try(attempt) for attempt in message.tries.all()],
    }


def _secret_response(request: HttpRequest, secret: WebhookSecret) -> HttpResponse:
    return respond(request, present_secret(secret), 200, **NOT_STORED)


def _owned_delivery(request: HttpRequest, delivery_id: str) -> WebhookMessage:
    message = selectors.delivery_get(owner=request.auth, delivery_id=delivery_id)
    if message is None:
        raise HttpError(404, "no such delivery")
    return message


# --- endpoints ----------------------------------------------------------------------


@router.get("/secret", response={200: SecretOut, **ERRORS}, summary="Your signing secret")
def get_secret(request: HttpRequest) -> HttpResponse:
    """The secret your webhooks are signed with (Standard Webhooks), made on first use."""
    return _secret_response(request, secret_for(request.auth))


@router.post(
    "/secret/rotate", response={200: SecretOut, **ERRORS}, summary="Rotate your signing secret"
)
def rotate_secret(request: HttpRequest) -> HttpResponse:
    """A new secret; the one it replaces keeps signing alongside it for 24 hours, so receivers
    can switch over without rejecting a message."""
    return _secret_response(request, secret_rotate(request.auth))


@router.get(
    "/deliveries",
    response={200: DeliveryPage, **ERRORS},
    summary="Webhook deliveries, newest first",
)
def list_deliveries(request: HttpRequest, filters: Query[DeliveryFilters]) -> dict[str, Any]:
    """Every message sent to your jobs' and batches' webhooks, with each try's answer."""
    page = selectors.delivery_list(owner=request.auth, **filters.model_dump())
    return {
        "items": [present_delivery(message) for message in page.items],
        "next_cursor": page.next_cursor,
    }


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response={202: DeliveryOut, **ERRORS},
    summary="Send a delivered or failed message again",
)
def redeliver(request: HttpRequest, delivery_id: str) -> HttpResponse:
    """One more try, at once, with the same webhook-id and body; a message still pending
    (its tries are not over) is 409."""
    message = webhooks.message_redeliver(message=_owned_delivery(request, delivery_id))
    return respond(request, present_delivery(message), 202)
