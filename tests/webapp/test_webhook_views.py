"""The Webhooks page, and the webhook card of job and batch pages, through Django's test client."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.models import DeliveryStatus, Job, WebhookEvent, WebhookSecret
from jobs.webhook_secrets import secret_for, signing_secrets
from tests.helpers import batch_of, webhook_message

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hooks"
SCRIPT = "<script>alert('pwned')</script>"


@pytest.fixture
def web(client, user):
    client.force_login(user)
    return client


def job_of(owner, **fields) -> Job:
    return Job.objects.create(
        owner=owner, kind="summarize", model="claude-haiku-4-5", input={"text": "x"}, **fields
    )


def test_the_page_needs_a_login(client):
    response = client.get(reverse("webhooks"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert WebhookSecret.objects.count() == 0


def test_the_page_holds_the_secret_hidden_and_is_never_cached(web, user):
    response = web.get(reverse("webhooks"))

    html = response.content.decode()
    secret = secret_for(user).secret
    assert f'id="webhook-secret" type="password" value="{secret}"' in html
    assert 'data-reveal="#webhook-secret"' in html
    assert 'data-copy="#webhook-secret"' in html
    assert response["Cache-Control"].startswith("max-age=0")
    assert "no-store" in response["Cache-Control"]


def test_a_trailing_slash_still_opens_the_page(web):
    response = web.get("/webhooks/")

    assert response.status_code == 302
    assert response["Location"] == reverse("webhooks")


def test_rotating_redirects_and_keeps_the_old_secret_signing(web, user):
    old = secret_for(user).secret

    response = web.post(reverse("webhook_secret_rotate"))

    assert response.status_code == 302, "Post/Redirect/Get: a reload rotates nothing"
    assert response["Location"] == reverse("webhooks")
    new = secret_for(user).secret
    assert new != old
    assert signing_secrets(user.pk) == [new, old]
    cookies = "".join(morsel.OutputString() for morsel in response.cookies.values())
    assert new not in cookies, "the flash message holds no secret"
    assert old not in cookies
    page = web.get(response["Location"]).content.decode()
    assert "previous one keeps signing alongside it until" in page
    assert "the previous secret signs alongside this one until" in page
    assert f'value="{new}"' in page


def test_rotating_needs_a_post(web, user):
    assert web.get(reverse("webhook_secret_rotate")).status_code == 405
    assert not WebhookSecret.objects.filter(user=user, previous__gt="").exists()


def test_the_log_shows_each_message_with_its_tries_and_redeliver(web, user):
    job = job_of(user, webhook=HOOK)
    failed = webhook_message(
        job,
        status=DeliveryStatus.FAILED,
        tries=[{"http_status": 410, "latency_ms": 31, "response_head": f"gone {SCRIPT}"}],
    )
    pending = webhook_message(
        job, event=WebhookEvent.JOB_STARTED, status=DeliveryStatus.PENDING,
        tries=[{"error": "connection refused", "latency_ms": 2}],
    )  # fmt: skip

    html = web.get(reverse("webhooks")).content.decode()

    assert failed.id in html
    assert pending.id in html
    assert "HTTP 410" in html
    assert "connection refused" in html
    assert SCRIPT not in html, "the receiver's answer is shown escaped"
    assert "gone &lt;script&gt;" in html
    assert reverse("delivery_redeliver", args=[failed.id]) in html
    assert reverse("delivery_redeliver", args=[pending.id]) not in html, "its tries go on"
    assert reverse("job_detail", args=[job.id]) in html
    assert 'data-live-active="true"' in html, "a pending message: the log follows it"


def test_the_log_filters_by_status_and_pages(web, user):
    job = job_of(user, webhook=HOOK)
    failed = webhook_message(job, status=DeliveryStatus.FAILED)
    delivered = webhook_message(job)

    html = web.get(reverse("webhooks"), {"status": "failed"}).content.decode()

    assert failed.id in html
    assert delivered.id not in html
    assert 'data-live-active="false"' in html
    stale = web.get(reverse("webhooks"), {"cursor": "bm9wZQ"}).content.decode()
    assert failed.id in stale, "a stale cursor shows the first page"
    assert delivered.id in stale


def test_another_users_messages_are_not_shown(web, other_user):
    theirs = webhook_message(job_of(other_user, webhook=HOOK))

    html = web.get(reverse("webhooks")).content.decode()

    assert theirs.id not in html
    assert "No webhooks sent yet" in html


def test_redeliver_puts_the_message_back_and_returns_to_the_page_it_came_from(web, user):
    message = webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.FAILED)
    back = reverse("webhooks") + "?status=failed"

    response = web.post(reverse("delivery_redeliver", args=[message.id]), {"next": back})

    assert response.status_code == 302
    assert response["Location"] == back
    message.refresh_from_db()
    assert message.status == DeliveryStatus.PENDING


def test_the_live_log_sends_redeliver_back_to_the_page_not_the_fragment(web, user):
    webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.FAILED)

    html = web.get(reverse("webhooks_live"), {"status": "failed"}).content.decode()

    assert f'name="next" value="{reverse("webhooks")}?status=failed"' in html


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/", "x"])
def test_redeliver_never_redirects_off_the_site(web, user, target):
    message = webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.FAILED)

    response = web.post(reverse("delivery_redeliver", args=[message.id]), {"next": target})

    assert response["Location"] == reverse("webhooks")


def test_redeliver_of_a_pending_message_says_so_and_changes_nothing(web, user):
    message = webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.PENDING)

    response = web.post(reverse("delivery_redeliver", args=[message.id]), follow=True)

    assert "still being delivered" in response.content.decode()
    message.refresh_from_db()
    assert message.attempts == 0


def test_another_users_message_cannot_be_redelivered(web, other_user):
    message = webhook_message(job_of(other_user, webhook=HOOK), status=DeliveryStatus.FAILED)

    assert web.post(reverse("delivery_redeliver", args=[message.id])).status_code == 404
    message.refresh_from_db()
    assert message.status == DeliveryStatus.FAILED


# --- job and batch pages ------------------------------------------------------------------------


def test_a_job_page_shows_its_webhook_and_what_was_sent(web, user):
    job = job_of(user, webhook=HOOK, webhook_events=["start", "completed"])
    webhook_message(job, event=WebhookEvent.JOB_STARTED, tries=[{"http_status": 204}])

    for name in ("job_detail", "job_detail_live"):
        html = web.get(reverse(name, args=[job.id])).content.decode()
        assert 'id="job-webhook"' in html
        assert HOOK in html
        assert "Sends: start, completed" in html
        assert "job.started" in html
        assert "HTTP 204" in html


def test_a_job_without_a_webhook_has_no_webhook_card(web, user):
    html = web.get(reverse("job_detail", args=[job_of(user).id])).content.decode()

    assert 'id="job-webhook"' not in html


def test_a_batch_page_shows_its_webhook(web, user):
    batch = batch_of(user, ["one", "two"])
    batch.webhook = HOOK
    batch.save()
    webhook_message(batch, event=WebhookEvent.BATCH_STARTED, status=DeliveryStatus.PENDING)

    for name in ("batch_detail", "batch_detail_live"):
        html = web.get(reverse(name, args=[batch.id])).content.decode()
        assert 'id="batch-webhook"' in html
        assert HOOK in html
        assert "batch.started" in html
