"""One try at a webhook, against real receivers (devtools.webhook_receiver processes on
127.0.0.1): signed and verified with standardwebhooks, refused again at delivery, no
redirect followed, a hung or huge answer ended by the deadline and the 4 KiB read, retries
with the same webhook-id, and the outcome each answer leads to."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import DeliveryStatus, WebhookAttempt, WebhookMessage
from jobs.presenters import present_job
from jobs.submission import job_cancel, job_submit
from jobs.webhook_secrets import secret_for, secret_rotate
from jobs.webhooks import RESPONSE_HEAD_CHARS, UNFINISHED_TRY, message_redeliver
from tests.integration.harness import WebhookReceiver
from workers.webhooks import message_deliver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receivers(user):
    """Start receivers (verifying with the user's secret file, or a given secret); each is
    stopped by PID at the test's end."""
    started: list[WebhookReceiver] = []

    def start(*extra: str, secret: str | None = None) -> WebhookReceiver:
        receiver = WebhookReceiver.start(secret or secret_for(user).secret, *extra)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def completed_message(user, url: str) -> WebhookMessage:
    """A job.completed message to `url`: a job with that webhook, canceled."""
    job = job_submit(owner=user, kind="summarize", input={"text": "Hi. There."}, webhook=url).job
    job_cancel(job=job)
    return WebhookMessage.objects.get(job=job)


def deliver(message: WebhookMessage) -> WebhookMessage:
    message_deliver(message_id=message.pk, celery_task_id="task-1")
    message.refresh_from_db()
    return message


def test_a_delivered_message_is_verified_by_the_receiver_and_carries_the_job_json(user, receivers):
    receiver = receivers()
    message = deliver(completed_message(user, receiver.url))
    assert message.status == DeliveryStatus.DELIVERED
    [arrived] = receiver.received()
    assert arrived["verified"] is True
    assert arrived["webhook_id"] == message.pk
    assert arrived["type"] == "job.completed"
    body = json.loads(arrived["body"])
    assert body["data"] == present_job(message.job)
    assert body["data"]["status"] == "canceled"
    assert body["timestamp"] == message.payload["timestamp"]
    [attempt] = message.tries.all()
    assert (attempt.attempt, attempt.http_status, attempt.celery_task_id) == (1, 204, "task-1")


def test_after_a_rotation_receivers_with_either_secret_verify(user, receivers):
    old = secret_for(user).secret
    new = secret_rotate(user).secret
    with_old, with_new = receivers(secret=old), receivers(secret=new)
    deliver(completed_message(user, with_old.url))
    deliver(completed_message(user, with_new.url))
    assert [r["verified"] for r in with_old.received() + with_new.received()] == [True, True]


def test_a_signature_of_another_secret_is_refused_by_the_receiver(user, receivers):
    stranger = secret_rotate(user).previous  # a secret that no longer signs once it expires
    user.webhook_secret.previous_expires_at = timezone.now()
    user.webhook_secret.save()
    receiver = receivers(secret=stranger)
    message = deliver(completed_message(user, receiver.url))
    assert [r["verified"] for r in receiver.received()] == [False]
    assert message.status == DeliveryStatus.FAILED  # a 401 is not retried
    assert message.tries.get().http_status == 401


def test_an_address_refused_at_delivery_is_not_sent(user, receivers, settings):
    receiver = receivers()
    message = completed_message(user, receiver.url)
    settings.AIJOBS_WEBHOOK_ALLOWED_HOSTS = []  # as if its name now resolved elsewhere
    message = deliver(message)
    assert message.status == DeliveryStatus.FAILED
    attempt = message.tries.get()
    assert attempt.http_status is None
    assert "refused, nothing sent" in attempt.error
    assert receiver.received() == []


def test_a_redirect_is_not_followed(user, receivers):
    target = receivers()
    redirecting = receivers("--status", "302", "--location", target.url)
    message = deliver(completed_message(user, redirecting.url))
    assert message.status == DeliveryStatus.FAILED
    assert message.tries.get().http_status == 302
    assert len(redirecting.received()) == 1
    assert target.received() == []


@pytest.mark.timeout(60)
def test_a_receiver_that_never_answers_is_given_up_at_the_deadline(user, receivers, settings):
    settings.AIJOBS_WEBHOOK_TIMEOUT_SECONDS = 1.0
    hung = receivers("--hang")
    message = deliver(completed_message(user, hung.url))
    attempt = message.tries.get()
    assert attempt.error == "no answer within 1s"
    assert attempt.http_status is None
    assert message.status == DeliveryStatus.PENDING  # a timeout is tried again
    assert message.next_attempt_at > attempt.created_at


@pytest.mark.timeout(60)
def test_a_huge_answer_is_read_no_further_than_its_first_bytes(user, receivers):
    # 100 GiB: read to the end, it would outlast the deadline and the try would be a timeout.
    huge = receivers("--status", "200", "--answer-bytes", str(100 * 1024**3))
    message = deliver(completed_message(user, huge.url))
    attempt = message.tries.get()
    assert message.status == DeliveryStatus.DELIVERED
    assert attempt.response_head == "x" * RESPONSE_HEAD_CHARS


def test_a_failing_receiver_gets_every_try_with_the_same_webhook_id(user, receivers):
    failing = receivers("--status", "503")
    message = deliver(completed_message(user, failing.url))
    assert message.status == DeliveryStatus.PENDING
    first_due = message.next_attempt_at
    assert message_deliver(message_id=message.pk, celery_task_id="early") is None  # not due yet
    WebhookMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    message = deliver(message)
    ids = [r["webhook_id"] for r in failing.received()]
    assert ids == [message.pk, message.pk]
    assert [a.http_status for a in message.tries.all()] == [503, 503]
    # Backoff: the second wait is longer than the first could be (x4, jittered by half).
    assert message.next_attempt_at - message.tries.last().created_at > (
        first_due - message.tries.first().created_at
    )
    assert len({r["body"] for r in failing.received()}) == 1  # the same bytes every try


@pytest.mark.parametrize(("status", "outcome"), [("400", "failed"), ("429", "pending")])
def test_a_4xx_fails_at_once_but_429_is_tried_again(user, receivers, status, outcome):
    message = deliver(completed_message(user, receivers("--status", status).url))
    assert message.status == outcome


def test_a_message_past_its_retry_window_fails(user, receivers, settings):
    settings.AIJOBS_WEBHOOK_RETRY_HOURS = 0
    message = deliver(completed_message(user, receivers("--status", "500").url))
    assert message.status == DeliveryStatus.FAILED


def test_a_redeliver_sends_once_more_with_the_same_id(user, receivers):
    receiver = receivers()
    message = deliver(completed_message(user, receiver.url))
    message = deliver(message_redeliver(message=message))
    assert message.status == DeliveryStatus.DELIVERED
    assert [r["webhook_id"] for r in receiver.received()] == [message.pk, message.pk]
    assert message.tries.count() == 2


def test_a_try_held_by_a_worker_that_died_is_logged_and_taken_over_after_its_lease(user, receivers):
    receiver = receivers()
    message = completed_message(user, receiver.url)
    # A try that claimed the message and never finished (its worker was killed).
    WebhookMessage.objects.filter(pk=message.pk).update(
        attempts=1, lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    WebhookAttempt.objects.create(message=message, attempt=1)
    assert message_deliver(message_id=message.pk, celery_task_id="t") is None
    WebhookMessage.objects.filter(pk=message.pk).update(lease_expires_at=timezone.now())
    message = deliver(message)
    assert message.status == DeliveryStatus.DELIVERED
    assert [(a.attempt, a.error) for a in message.tries.all()] == [(1, UNFINISHED_TRY), (2, "")]
