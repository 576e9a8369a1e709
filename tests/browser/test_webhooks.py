"""The Webhooks page in Chromium, on the real stack: the secret shown, copied and rotated.

With AIJOBS_SCREENSHOTS set (`make screenshots`), the page is saved as screenshots too.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from jobs.models import WebhookSecret
from jobs.webhook_secrets import secret_for, signing_secrets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_secret_is_hidden_until_shown_copied_and_rotated(page, user, snap):
    secret = secret_for(user).secret
    page.goto("/webhooks")
    field = page.locator("#webhook-secret")
    expect(field).to_have_attribute("type", "password")
    expect(page.get_by_text(secret)).to_have_count(0)

    page.get_by_role("button", name="Show").click()
    expect(field).to_have_attribute("type", "text")
    expect(field).to_have_value(secret)
    expect(page.get_by_role("button", name="Hide")).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("[data-copy-label]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    snap(page, "webhooks-secret")

    # The confirmation is accepted (the page fixture accepts dialogs); the POST redirects.
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_text("New signing secret made")).to_be_visible()
    rotated = secret_for(user).secret
    assert rotated != secret
    assert signing_secrets(user.pk) == [rotated, secret], "the old one signs 24 h more"
    expect(field).to_have_attribute("type", "password")
    expect(field).to_have_value(rotated)
    expect(page.locator("[data-previous-secret]")).to_contain_text("signs alongside this one")

    page.reload()
    expect(field).to_have_value(rotated)
    assert WebhookSecret.objects.get(user=user).secret == rotated, "a reload rotates nothing"
