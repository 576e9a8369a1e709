"""The benchmark's URLconf: `/bench/constant` (scenario d's baseline), then the product's URLs."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from webapp.urls import urlpatterns as product_urlpatterns

# About the size of a finished job's JSON (1.0 to 1.3 kB), so both answers cost the same to send.
CONSTANT_BODY = b'{"status": "ok", "detail": "' + b"x" * 1100 + b'"}'


def constant(request: HttpRequest) -> HttpResponse:
    """A bare Django view: the same middleware as every page, no database, no serialization."""
    return HttpResponse(CONSTANT_BODY, content_type="application/json")


urlpatterns = [path("bench/constant", constant), *product_urlpatterns]
