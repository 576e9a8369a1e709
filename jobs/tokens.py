"""API tokens: created once and shown once, stored as SHA-256 digests, revocable."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from jobs.models import ApiToken

TOKEN_PREFIX = "aij_"
# Writing last_used_at on every request would turn reads into writes; once a
# minute is enough to tell a live token from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A status poll would otherwise spend half its time finding the token's user.
# Each process remembers a token for this long, so revoking a token (or
# deactivating its user) takes effect everywhere within it; at once in the
# process that revoked it.
CACHE_SECONDS = 15.0
CACHE_SIZE = 10_000

_cache: dict[str, tuple[float, AbstractBaseUser]] = {}


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token and its secret, which is never retrievable again."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw[:12], digest=_digest(raw))
    return token, raw


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _cache.pop(token.digest, None)


def api_token_authenticate(raw: str) -> AbstractBaseUser | None:
    """The active user owning this token, or None."""
    digest = _digest(raw)
    cached = _cache.get(digest)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    user = _lookup(digest)
    if user is not None:
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[digest] = (time.monotonic() + CACHE_SECONDS, user)
    return user


def _lookup(digest: str) -> AbstractBaseUser | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
