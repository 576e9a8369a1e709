"""The webhook endpoints: the signing secret and its rotation, the delivery log, redeliver."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import DeliveryStatus, Job, WebhookEvent, WebhookMessage, WebhookSecret
from jobs.webhook_secrets import signing_secrets
from tests.helpers import batch_of, webhook_message

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("GET", "/webhooks/secret"),
    ("POST", "/webhooks/secret/rotate"),
    ("GET", "/webhooks/deliveries"),
    ("POST", "/webhooks/deliveries/msg_0123456789abcdef0123456789abcdef/redeliver"),
]
HOOK = "http://127.0.0.1:9/hooks"


@pytest.fixture
def call(client, token):
    def call(method: str, path: str, token: str | None = token):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return client.generic(method, f"/api/v1{path}", **headers)

    return call


def job_of(owner, **fields) -> Job:
    return Job.objects.create(
        owner=owner, kind="summarize", model="claude-haiku-4-5", input={"text": "x"}, **fields
    )


def parsed(value: str) -> datetime:
    return datetime.fromisoformat(value)


def same_moment(value: str, moment: datetime) -> bool:
    """The API's times are to the millisecond."""
    return abs(parsed(value) - moment) < timedelta(milliseconds=1)


# --- auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_webhook_endpoint_needs_a_token(call, method, path):
    response = call(method, path, token=None)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert WebhookSecret.objects.count() == 0, "nothing made for nobody"


# --- the secret ---------------------------------------------------------------------------------


def test_the_secret_is_made_on_first_use_and_then_stays(call, user):
    first = call("GET", "/webhooks/secret")
    second = call("GET", "/webhooks/secret")

    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"secret", "previous_expires_at"}
    assert body["secret"].startswith("whsec_")
    assert body["previous_expires_at"] is None
    assert second.json() == body
    assert signing_secrets(user.pk) == [body["secret"]]
    assert first["Cache-Control"] == "no-store", "no cache keeps a copy of the secret"


def test_each_user_has_a_secret_of_their_own(call, other_token):
    mine = call("GET", "/webhooks/secret").json()["secret"]
    theirs = call("GET", "/webhooks/secret", token=other_token).json()["secret"]

    assert mine != theirs


def test_a_rotation_keeps_the_previous_secret_signing_for_24_hours(call, user):
    old = call("GET", "/webhooks/secret").json()["secret"]
    before = timezone.now()

    response = call("POST", "/webhooks/secret/rotate")

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != old
    expires = parsed(rotated["previous_expires_at"])
    assert before + timedelta(hours=24) <= expires <= timezone.now() + timedelta(hours=24)
    assert call("GET", "/webhooks/secret").json() == rotated
    assert signing_secrets(user.pk) == [rotated["secret"], old]


def test_once_its_24_hours_are_over_the_previous_secret_signs_no_more(call, user):
    call("POST", "/webhooks/secret/rotate")
    WebhookSecret.objects.filter(user=user).update(
        previous_expires_at=timezone.now() - timedelta(seconds=1)
    )

    body = call("GET", "/webhooks/secret").json()

    assert body["previous_expires_at"] is None
    assert signing_secrets(user.pk) == [body["secret"]]


def test_a_second_rotation_replaces_the_previous_secret(call, user):
    call("POST", "/webhooks/secret/rotate")
    middle = call("GET", "/webhooks/secret").json()["secret"]

    newest = call("POST", "/webhooks/secret/rotate").json()["secret"]

    assert signing_secrets(user.pk) == [newest, middle]


# --- the delivery log ---------------------------------------------------------------------------


def test_a_delivery_shows_its_message_and_every_try(call, user):
    job = job_of(user, webhook=HOOK)
    message = webhook_message(
        job,
        tries=[
            {"http_status": 503, "latency_ms": 40, "response_head": "busy"},
            {"error": "connection refused", "latency_ms": 3},
            {"http_status": 204, "latency_ms": 12},
        ],
    )

    response = call("GET", "/webhooks/deliveries")

    assert response.status_code == 200
    (delivery,) = response.json()["items"]
    assert response.json()["next_cursor"] is None
    assert delivery["id"] == message.id
    assert delivery["type"] == "job.completed"
    assert delivery["url"] == HOOK
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert delivery["job_id"] == str(job.id)
    assert delivery["batch_id"] is None
    assert same_moment(delivery["created_at"], message.created_at)
    assert delivery["next_attempt_at"] is None, "only a pending message has a next try"
    assert same_moment(delivery["delivered_at"], message.delivered_at)
    tries = delivery["tries"]
    assert [t["attempt"] for t in tries] == [1, 2, 3]
    assert [t["http_status"] for t in tries] == [503, None, 204]
    assert [t["error"] for t in tries] == [None, "connection refused", None]
    assert [t["latency_ms"] for t in tries] == [40, 3, 12]
    assert tries[0]["response_head"] == "busy"
    assert set(tries[0]) == {
        "attempt", "created_at", "http_status", "error", "latency_ms", "response_head",
    }  # fmt: skip


def test_a_pending_delivery_says_when_its_next_try_is(call, user):
    message = webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.PENDING)

    (delivery,) = call("GET", "/webhooks/deliveries").json()["items"]

    assert delivery["status"] == "pending"
    assert same_moment(delivery["next_attempt_at"], message.next_attempt_at)
    assert delivery["delivered_at"] is None
    assert delivery["tries"] == []


def test_a_batch_delivery_names_the_batch(call, user):
    batch = batch_of(user, ["one", "two"])
    webhook_message(batch, event=WebhookEvent.BATCH_STARTED)

    (delivery,) = call("GET", "/webhooks/deliveries").json()["items"]

    assert (delivery["type"], delivery["batch_id"]) == ("batch.started", str(batch.id))
    assert delivery["job_id"] is None


def test_deliveries_come_newest_first_page_by_page(call, user):
    job = job_of(user, webhook=HOOK)
    start = timezone.now() - timedelta(hours=1)
    made = [
        webhook_message(job, created_at=start + timedelta(minutes=n), tries=[{"http_status": 204}])
        for n in range(7)
    ]
    # Two at the very same moment: the id breaks the tie, so neither is skipped nor repeated.
    made.append(webhook_message(job, created_at=made[-1].created_at))

    seen, cursor, pages = [], "", 0
    while True:
        page = call("GET", f"/webhooks/deliveries?limit=3&cursor={cursor}").json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        if not (cursor := page["next_cursor"]):
            break

    newest_first = sorted(made, key=lambda m: (m.created_at, m.id), reverse=True)
    assert seen == [message.id for message in newest_first]
    assert pages == 3


def test_the_status_filter_keeps_only_that_status(call, user):
    job = job_of(user, webhook=HOOK)
    failed = webhook_message(job, status=DeliveryStatus.FAILED, tries=[{"http_status": 410}])
    webhook_message(job, event=WebhookEvent.JOB_STARTED)

    items = call("GET", "/webhooks/deliveries?status=failed").json()["items"]

    assert [item["id"] for item in items] == [failed.id]
    assert call("GET", "/webhooks/deliveries?status=lost").status_code == 422


def test_a_cursor_that_is_not_ours_is_422(call):
    response = call("GET", "/webhooks/deliveries?cursor=bm90LWEtY3Vyc29y")

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["query", "cursor"]


def test_another_users_deliveries_are_not_listed(call, user, other_user):
    webhook_message(job_of(other_user, webhook=HOOK))
    mine = webhook_message(job_of(user, webhook=HOOK))

    items = call("GET", "/webhooks/deliveries").json()["items"]

    assert [item["id"] for item in items] == [mine.id]


def test_a_page_of_deliveries_costs_the_same_queries_however_many_tries(call, user):
    job = job_of(user, webhook=HOOK)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert call("GET", "/webhooks/deliveries").status_code == 200
        return len(captured)

    queries()  # the token's first use is looked up and recorded once
    webhook_message(job, tries=[{"http_status": 204}])
    one = queries()
    for _ in range(5):
        webhook_message(job, tries=[{"http_status": 500}, {"http_status": 204}])

    assert queries() == one


# --- redeliver ----------------------------------------------------------------------------------


def test_redeliver_puts_a_finished_message_back_for_one_more_try(call, user):
    message = webhook_message(
        job_of(user, webhook=HOOK), status=DeliveryStatus.FAILED, tries=[{"http_status": 410}]
    )

    response = call("POST", f"/webhooks/deliveries/{message.id}/redeliver")

    assert response.status_code == 202, response.content
    delivery = response.json()
    assert delivery["id"] == message.id, "the same webhook-id"
    assert delivery["status"] == "pending"
    assert [t["http_status"] for t in delivery["tries"]] == [410], "its log is kept"
    message.refresh_from_db()
    assert message.status == DeliveryStatus.PENDING
    assert message.next_attempt_at <= timezone.now()


def test_redeliver_of_a_pending_message_is_409(call, user):
    message = webhook_message(job_of(user, webhook=HOOK), status=DeliveryStatus.PENDING)
    before = WebhookMessage.objects.values().get(pk=message.pk)

    response = call("POST", f"/webhooks/deliveries/{message.id}/redeliver")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "delivery_pending"
    assert WebhookMessage.objects.values().get(pk=message.pk) == before


@pytest.mark.parametrize("whose", ["another user's", "no one's"])
def test_redeliver_of_a_message_that_is_not_yours_is_404(call, other_user, whose):
    message = webhook_message(job_of(other_user, webhook=HOOK))
    delivery_id = message.id if whose == "another user's" else "msg_" + "0" * 32
    before = WebhookMessage.objects.values().get(pk=message.pk)

    response = call("POST", f"/webhooks/deliveries/{delivery_id}/redeliver")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert WebhookMessage.objects.values().get(pk=message.pk) == before
