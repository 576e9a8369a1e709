"""Who may do what: auth on every endpoint but health, CSRF on every form, deploy checks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from webapp.api import api

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {("get", "/api/v1/health")}


def operations() -> list[tuple[str, str]]:
    paths = api.get_openapi_schema()["paths"]
    return [(method, path) for path, item in paths.items() for method in item]


@pytest.mark.parametrize(("method", "path"), operations())
def test_every_api_operation_but_health_needs_credentials(client, method, path):
    url = path.replace("{job_id}", str(uuid4()))
    response = client.generic(method.upper(), url, b"{}", content_type="application/json")
    if (method, path) in PUBLIC:
        assert response.status_code in (200, 503)
    else:
        assert response.status_code == 401, url


def test_forms_refuse_posts_without_a_csrf_token(user):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)

    assert browser.post("/jobs/new", {"kind": "summarize", "text": "Hello."}).status_code == 403
    assert browser.post("/tokens", {"name": "x"}).status_code == 403
    session_api = browser.post(
        "/api/v1/jobs",
        {"kind": "summarize", "input": {"text": "Hello."}},
        content_type="application/json",
    )
    assert session_api.status_code == 403, "a session-authenticated API call needs CSRF too"


def test_bearer_requests_need_no_csrf_token(token):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(
        "/api/v1/jobs",
        {"kind": "summarize", "input": {"text": "Hello."}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201


def test_deploy_checks_pass_with_production_settings():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_HTTPS": "true",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "aijobs.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
