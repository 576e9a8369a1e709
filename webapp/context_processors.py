"""What every page's layout needs to know about the platform it runs on."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def platform(request: HttpRequest) -> dict[str, Any]:
    """`simulated` drives the banner saying results are not Claude's; `flower_url` the nav link."""
    return {
        "simulated": settings.AIJOBS_SIMULATED,
        "flower_url": settings.AIJOBS_FLOWER_URL,
    }
