"""What every page's layout needs: the platform it runs on and where in the nav it is."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

# URL name -> the nav entry it highlights.
NAV_SECTIONS = {
    "job_list": "jobs",
    "job_detail": "jobs",
    "job_cancel": "jobs",
    "job_rerun": "jobs",
    "job_new": "new",
    "batch_list": "batches",
    "batch_new": "batches",
    "batch_detail": "batches",
    "batch_cancel": "batches",
    "batch_rerun": "batches",
    "usage": "usage",
    "tokens": "tokens",
    "token_revoke": "tokens",
    "webhooks": "webhooks",
    "webhook_secret_rotate": "webhooks",
    "delivery_redeliver": "webhooks",
}


def platform(request: HttpRequest) -> dict[str, Any]:
    """`simulated` drives the banner saying results are not Claude's; `flower_url` a nav link."""
    match = getattr(request, "resolver_match", None)
    return {
        "simulated": settings.AIJOBS_SIMULATED,
        "flower_url": settings.AIJOBS_FLOWER_URL,
        "nav_section": NAV_SECTIONS.get(match.url_name if match else "", ""),
    }
