"""The Webhooks page in Chromium, on the real stack: the secret shown, copied and rotated; the
log of a real job's webhooks as a worker delivers them to devtools.webhook_receiver, and
a redeliver from the page.

With AIJOBS_SCREENSHOTS set (`make screenshots`), the page is saved as screenshots too.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from jobs import submission
from jobs.models import DeliveryStatus, WebhookEvent, WebhookMessage, WebhookSecret
from jobs.webhook_secrets import secret_for, signing_secrets
from jobs.webhooks import message_id
from tests.browser.test_pages import STORY
from tests.helpers import unique
from tests.integration.harness import WebhookReceiver, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# A delivery is handed over as its job's state changes; the page follows it every 2 s.
DELIVERED_TIMEOUT_MS = 20_000


@pytest.fixture
def receiver(user):
    """A receiver verifying with the user's secret (a loopback address, allowed in the tests)."""
    started = WebhookReceiver.start(secret_for(user).secret)
    yield started
    started.stop()


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


def delivery(page, message: str):
    return page.locator(f"#{message}")


def test_a_jobs_webhooks_are_logged_with_their_tries_and_redelivered(
    page, user, worker, receiver, snap
):
    job = submission.job_submit(
        owner=user,
        kind="summarize",
        input={"text": unique(STORY)},
        webhook=f"{receiver.url}/hooks",
        webhook_events_filter=["start", "completed"],
    ).job
    started = message_id(job.id, WebhookEvent.JOB_STARTED)
    completed = message_id(job.id, WebhookEvent.JOB_COMPLETED)

    wait_for(
        lambda: WebhookMessage.objects.filter(pk=completed).exists(),
        timeout=20,
        what="the job to finish",
    )
    page.goto("/webhooks")
    expect(delivery(page, completed).locator(".badge").first).to_have_text(
        "Delivered", timeout=DELIVERED_TIMEOUT_MS
    )
    expect(delivery(page, started).locator(".badge").first).to_have_text("Delivered")
    expect(delivery(page, completed).locator(".table-tries tbody tr")).to_have_count(1)
    expect(delivery(page, completed).locator(".table-tries")).to_contain_text("HTTP 204")
    expect(delivery(page, completed)).to_contain_text(f"POST {receiver.url}/hooks")
    arrived = receiver.received()
    assert [(item["webhook_id"], item["verified"]) for item in arrived] == [
        (started, True),
        (completed, True),
    ]
    snap(page, "webhooks")

    delivery(page, completed).get_by_role("button", name="Redeliver").click()
    expect(page.get_by_text("Sending job.completed again")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    # Pending again: the log follows it without a reload until its try is in.
    expect(delivery(page, completed).locator(".table-tries tbody tr")).to_have_count(
        2, timeout=DELIVERED_TIMEOUT_MS
    )
    expect(delivery(page, completed).locator(".badge").first).to_have_text("Delivered")
    assert page.evaluate("window.notReloaded") is True, "the log updated itself"
    wait_for(lambda: len(receiver.received()) == 3, timeout=10, what="the redelivered message")
    again = receiver.received()[-1]
    assert (again["webhook_id"], again["verified"]) == (completed, True), "the same webhook-id"
    assert again["body"] == arrived[1]["body"], "the same body, byte for byte"
    message = WebhookMessage.objects.get(pk=completed)
    assert (message.status, message.attempts) == (DeliveryStatus.DELIVERED, 2)

    page.get_by_role("link", name=f"Job {str(job.id)[:8]}").first.click()
    card = page.locator("#job-webhook")
    expect(card).to_contain_text(f"{receiver.url}/hooks")
    expect(card.locator(".badge")).to_have_text(["Delivered", "Delivered"])
