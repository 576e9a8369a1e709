"""Each user's webhook signing secret: made on first use, rotated on request.

A rotation keeps the previous secret signing alongside the new one for
PREVIOUS_SECRET_LIFETIME (Standard Webhooks puts several signatures in one
header), so a receiver can switch over without rejecting a single message.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from jobs.models import WebhookSecret

PREFIX = "whsec_"
# 24 random bytes, as Svix's secrets: 192 bits, well past what HMAC-SHA256 needs.
SECRET_BYTES = 24
PREVIOUS_SECRET_LIFETIME = timedelta(hours=24)


def _new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_for(user: AbstractBaseUser) -> WebhookSecret:
    """The user's secret, made the first time anyone asks (page, API or a delivery)."""
    return _secret_of(user.pk)


def _secret_of(user_id: int) -> WebhookSecret:
    secret, _created = WebhookSecret.objects.get_or_create(
        user_id=user_id, defaults={"secret": _new_secret()}
    )
    return secret


@transaction.atomic
def secret_rotate(user: AbstractBaseUser) -> WebhookSecret:
    """A new secret for the user; the one it replaces keeps signing for 24 hours."""
    current = secret_for(user)
    secret = WebhookSecret.objects.select_for_update().get(pk=current.pk)
    now = timezone.now()
    secret.previous = secret.secret
    secret.previous_expires_at = now + PREVIOUS_SECRET_LIFETIME
    secret.secret = _new_secret()
    secret.rotated_at = now
    secret.save()
    return secret


def signing_secrets(user_id: int) -> list[str]:
    """The secrets a message to this user's webhooks is signed with now: the current one, and
    the previous one while it lasts."""
    secret = _secret_of(user_id)
    keys = [secret.secret]
    if previous_until(secret) is not None:
        keys.append(secret.previous)
    return keys


def previous_until(secret: WebhookSecret) -> datetime | None:
    """When the secret a rotation replaced stops signing; None when it signs no more."""
    expires = secret.previous_expires_at
    if secret.previous and expires is not None and expires > timezone.now():
        return expires
    return None
