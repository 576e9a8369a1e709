"""Who may do what: auth on every endpoint but health, CSRF on every form, deploy checks."""

from __future__ import annotations

import os
import re
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


# --- login throttling ---------------------------------------------------------------------------

RIGHT = "correct-horse-battery"


def sign_in(client, username="alice", password=RIGHT, address="127.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def fail_sign_ins(client, times, **who):
    return [sign_in(client, password="wrong", **who).status_code for _ in range(times)]


def test_repeated_wrong_passwords_lock_the_login_out(client, user, settings):
    limit = settings.AXES_FAILURE_LIMIT

    statuses = fail_sign_ins(client, limit + 3)

    assert statuses[: limit - 1] == [200] * (limit - 1), "the first failures are answered normally"
    assert statuses[limit - 1 :] == [429] * 4
    locked = sign_in(client)
    assert locked.status_code == 429, "the right password is refused while locked out"
    assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_lockout_is_per_username_and_address(client, user, other_user, settings):
    fail_sign_ins(client, settings.AXES_FAILURE_LIMIT)

    assert sign_in(client).status_code == 429
    assert sign_in(client, username="mallory").status_code == 302
    client.post("/logout/")
    assert sign_in(client, address="127.0.0.2").status_code == 302


def test_resetting_the_username_unlocks_it(client, user, settings):
    from django.core.management import call_command

    fail_sign_ins(client, settings.AXES_FAILURE_LIMIT)
    assert sign_in(client).status_code == 429

    call_command("axes_reset_username", "alice")

    assert sign_in(client).status_code == 302


def test_a_successful_login_resets_the_count(client, user, settings):
    almost = settings.AXES_FAILURE_LIMIT - 1
    fail_sign_ins(client, almost)
    assert sign_in(client).status_code == 302
    client.post("/logout/")

    assert fail_sign_ins(client, almost) == [200] * almost
    assert sign_in(client).status_code == 302


# --- Content-Security-Policy --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs/new", "/usage", "/tokens", "/api/v1/docs", "/login/"])
def test_every_page_and_the_api_docs_carry_a_strict_content_security_policy(client, user, path):
    client.force_login(user)

    policy = client.get(path, follow=True).headers["Content-Security-Policy"]

    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'", "no inline style, no style attributes"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


def test_no_template_has_an_inline_script_style_or_handler():
    """The policy would block them: values go through data attributes, <meter> or SVG."""
    inline = re.compile(
        r"<style|\sstyle=|\son[a-z]+=|<script(?![^>]*\s(?:src|type=\"application/json\"))"
    )
    templates = sorted((ROOT / "webapp" / "templates").rglob("*.html"))

    found = [
        f"{path.name}: {m.group()}" for path in templates for m in inline.finditer(path.read_text())
    ]

    assert templates
    assert found == []
