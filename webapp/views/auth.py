"""Signing in: the answer to a login that django-axes has locked out."""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

LOCKED_OUT_STATUS = 429


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """The sign-in page again, saying why the login was refused and when to try again.

    Axes calls this (AXES_LOCKOUT_CALLABLE) for every login attempt while the username and
    address are locked out, the right password included, so nothing here reveals whether
    the password was right.
    """
    cool_off = get_cool_off(request) or settings.AXES_COOLOFF_TIME
    minutes = math.ceil(cool_off.total_seconds() / 60)
    username = request.POST.get("username", "")
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": request.POST.get(REDIRECT_FIELD_NAME, ""),
        "locked_out_minutes": minutes,
    }
    response = render(request, "auth/login.html", context, status=LOCKED_OUT_STATUS)
    response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
