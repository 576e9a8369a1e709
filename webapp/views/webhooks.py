"""Webhooks: the signing secret (shown on request, copied, rotated) and the delivery log."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from jobs import selectors, webhooks
from jobs.errors import DeliveryPending
from jobs.models import DeliveryStatus
from jobs.webhook_secrets import previous_until, secret_for, secret_rotate
from webapp.forms import DeliveryFilterForm
from webapp.templatetags.aijobs import timestamp
from webapp.views.jobs import listed


@login_required
@never_cache
@require_GET
def webhook_list(request: HttpRequest) -> HttpResponse:
    """The secret and the delivery log. Never cached: the page holds the secret."""
    secret = secret_for(request.user)
    context = {
        "secret": secret,
        "previous_until": previous_until(secret),
        **_log_context(request),
    }
    return render(request, "webhooks/list.html", context)


@login_required
@require_GET
def webhook_list_live(request: HttpRequest) -> HttpResponse:
    """The delivery log alone, re-fetched every 2 s while a message on it is pending."""
    return render(request, "webhooks/list_live.html", _log_context(request))


def _log_context(request: HttpRequest) -> dict[str, Any]:
    form = DeliveryFilterForm(request.GET)
    filters = form.filters()
    page = listed(selectors.delivery_list, owner=request.user, filters=filters)
    query = request.GET.urlencode()
    return {
        "filters": form,
        # Where a Redeliver button returns to: the page, also from the fragment it re-fetches.
        "log_url": reverse("webhooks") + (f"?{query}" if query else ""),
        "filtered": bool(filters["status"]),
        "page": page,
        "first_page": filters["cursor"] is None,
        "live": any(message.status == DeliveryStatus.PENDING for message in page.items),
    }


@login_required
@require_POST
def webhook_secret_rotate(request: HttpRequest) -> HttpResponse:
    """A new secret, then back to the page (a reload rotates nothing)."""
    secret = secret_rotate(request.user)
    messages.success(
        request,
        "New signing secret made. The previous one keeps signing alongside it until "
        f"{timestamp(previous_until(secret))}: give your receivers the new one before then.",
    )
    return redirect("webhooks")


@login_required
@require_POST
def delivery_redeliver(request: HttpRequest, delivery_id: str) -> HttpResponse:
    """One more try of a delivered or failed message, then back where the button was."""
    message = selectors.delivery_get(owner=request.user, delivery_id=delivery_id)
    if message is None:
        raise Http404("no such delivery")
    try:
        webhooks.message_redeliver(message=message)
    except DeliveryPending:
        messages.error(request, "That message is still being delivered: its next try is due.")
    else:
        messages.success(request, f"Sending {message.type} again, with the same webhook-id.")
    return redirect(_back(request))


def _back(request: HttpRequest) -> str:
    """The page the form was on (the log with its filters and page), if it is on this site."""
    target = request.POST.get("next", "")
    ours = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if ours and target.startswith("/") else reverse("webhooks")
