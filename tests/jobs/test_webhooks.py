"""Webhooks on the jobs side: the address rules (loopback addresses only), the message ids,
and the outbox row each state change writes in its own statement or transaction."""

from __future__ import annotations

import pytest
from django.utils import timezone

from jobs import dispatch
from jobs.attempts import (
    CallReport,
    call_begin,
    call_finish,
    job_claim,
    job_fail,
    job_release,
)
from jobs.batch_files import BatchItem
from jobs.batches import batch_cancel, batch_submit
from jobs.errors import DeliveryPending, IdempotencyKeyReused, InvalidInput
from jobs.models import DeliveryStatus, Job, Outcome, WebhookEvent, WebhookMessage
from jobs.submission import job_cancel, job_rerun, job_submit
from jobs.webhooks import message_id, message_redeliver, webhook_check

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:8025/hook"
BOTH = ["start", "completed"]


@pytest.mark.parametrize(
    ("url", "allowed", "refusal"),
    [
        ("https://127.0.0.2/", ["127.0.0.1"], "127.0.0.2, a loopback address"),
        ("http://127.0.0.2/", ["127.0.0.1"], "must be https"),
        ("https://[::ffff:127.0.0.2]/", ["127.0.0.1"], "127.0.0.2, a loopback address"),
        ("https://localhost/", [], "a loopback address"),
        ("https://127.0.0.1/", [], "127.0.0.1, a loopback address"),
        ("https://user:secret@127.0.0.1/", ["127.0.0.1"], "user name or password"),
        ("ftp://127.0.0.1/", ["127.0.0.1"], "must be an https URL"),
        ("https:///no-host", ["127.0.0.1"], "must be an https URL with a host"),
        ("https://127.0.0.1:99999/", ["127.0.0.1"], "invalid port"),
        ("https://bad..name/", ["127.0.0.1"], "cannot be resolved"),
    ],
)
def test_the_address_rules_refuse(settings, url, allowed, refusal):
    settings.AIJOBS_WEBHOOK_ALLOWED_HOSTS = allowed
    with pytest.raises(InvalidInput) as refused:
        webhook_check(url)
    assert refusal in refused.value.details[0]["msg"]
    assert refused.value.details[0]["loc"] == ["webhook"]


@pytest.mark.parametrize(
    ("url", "allowed", "normal"),
    [
        ("http://127.0.0.1:8025/hook", ["127.0.0.1"], "http://127.0.0.1:8025/hook"),
        ("HTTPS://127.0.0.1:8443/A?b=1#frag", ["127.0.0.1"], "https://127.0.0.1:8443/A?b=1"),
        ("https://[::ffff:127.0.0.2]/", ["127.0.0.2"], "https://[::ffff:127.0.0.2]/"),
        ("https://localhost", ["localhost"], "https://localhost/"),
        ("http://localhost:9/x", ["localhost"], "http://localhost:9/x"),
    ],
)
def test_listed_hosts_and_addresses_pass(settings, url, allowed, normal):
    settings.AIJOBS_WEBHOOK_ALLOWED_HOSTS = allowed
    assert webhook_check(url) == normal


def test_a_message_id_is_the_same_for_one_event_of_one_subject_only(job):
    started = message_id(job.id, WebhookEvent.JOB_STARTED)
    assert started == message_id(str(job.id), WebhookEvent.JOB_STARTED)
    assert started != message_id(job.id, WebhookEvent.JOB_COMPLETED)
    assert started.startswith("msg_")


@pytest.fixture
def job(user):
    return job_submit(owner=user, kind="summarize", input={"text": "Hello. World."}).job


def hooked(user, events=BOTH, text="Hello there. General.") -> Job:
    return job_submit(
        owner=user,
        kind="summarize",
        input={"text": text},
        webhook=HOOK,
        webhook_events_filter=events,
    ).job


def messages(**filters) -> list[tuple[str, str]]:
    return list(
        WebhookMessage.objects.filter(**filters).values_list("type", "url").order_by("type")
    )


def test_a_refused_webhook_stores_nothing(user):
    with pytest.raises(InvalidInput):
        job_submit(owner=user, kind="summarize", input={"text": "Hi."}, webhook="http://127.0.0.2/")
    with pytest.raises(InvalidInput) as refused:
        hooked(user, events=[])
    assert refused.value.details[0]["loc"] == ["webhook_events_filter"]
    assert not Job.objects.exists()


def test_the_first_claim_adds_job_started_and_a_later_claim_nothing(user):
    job = hooked(user)
    claim = job_claim(job_id=job.id)
    assert messages(job=job) == [("job.started", HOOK)]
    job_release(job_id=job.id, attempt=claim.job.attempts)
    assert job_claim(job_id=job.id).job is not None
    assert WebhookMessage.objects.filter(job=job).count() == 1


def test_without_the_start_filter_a_claim_adds_nothing(user, job):
    job_claim(job_id=job.id)
    job_claim(job_id=hooked(user, events=["completed"]).id)
    assert not WebhookMessage.objects.exists()


def test_a_success_adds_job_completed_with_the_claims_message(user):
    job = hooked(user)
    claimed = job_claim(job_id=job.id).job
    call = call_begin(job=claimed, seq=0, reserve_usd=0)
    call_finish(call=call, report=CallReport(outcome=Outcome.OK), result={"summary": "s"})
    assert messages(job=job) == [("job.completed", HOOK), ("job.started", HOOK)]
    completed = WebhookMessage.objects.get(job=job, type="job.completed")
    assert completed.id == message_id(job.id, WebhookEvent.JOB_COMPLETED)
    assert completed.owner_id == user.pk
    assert completed.status == DeliveryStatus.PENDING
    assert completed.retry_until > completed.created_at


def test_a_call_that_does_not_succeed_adds_nothing(user):
    job = hooked(user, events=["completed"])
    claimed = job_claim(job_id=job.id).job
    call = call_begin(job=claimed, seq=0, reserve_usd=0)
    call_finish(call=call, report=CallReport(outcome=Outcome.INVALID_OUTPUT))
    assert not WebhookMessage.objects.exists()


def test_a_failure_adds_job_completed_once(user):
    job = hooked(user, events=["completed"])
    claimed = job_claim(job_id=job.id).job
    assert job_fail(job_id=job.id, attempt=claimed.attempts, code="x", message="y")
    assert not job_fail(job_id=job.id, attempt=claimed.attempts, code="x", message="y")
    assert messages(job=job) == [("job.completed", HOOK)]


def test_a_cancel_adds_job_completed(user, job):
    hooked_job = hooked(user)
    job_cancel(job=hooked_job)
    job_cancel(job=job)
    assert messages() == [("job.completed", HOOK)]
    assert WebhookMessage.objects.get().job_id == hooked_job.id


def test_a_rerun_keeps_the_webhook(user):
    job = hooked(user, events=["start"])
    job_cancel(job=job)
    again = job_rerun(owner=user, job=job)
    assert (again.webhook, again.webhook_events) == (HOOK, ["start"])


def batch(user, events=BOTH, texts=("One.", "Two.")):
    items = [BatchItem(number=n, custom_id=None, input={"text": t}) for n, t in enumerate(texts, 1)]
    return batch_submit(
        owner=user,
        kind="summarize",
        model=None,
        mode="standard",
        params={},
        items=items,
        webhook=HOOK,
        webhook_events_filter=events,
    ).batch


def test_a_batch_starts_and_ends_with_its_messages_and_its_items_have_none(user):
    hooked_batch = batch(user)
    assert not Job.objects.filter(batch=hooked_batch).exclude(webhook="").exists()
    dispatch.batches_dispatch()
    assert messages(batch=hooked_batch) == [("batch.started", HOOK)]
    for item in Job.objects.filter(batch=hooked_batch):
        claimed = job_claim(job_id=item.id).job
        job_fail(job_id=item.id, attempt=claimed.attempts, code="x", message="y")
    dispatch.batches_dispatch()
    assert messages(batch=hooked_batch) == [("batch.completed", HOOK), ("batch.started", HOOK)]
    assert messages(job__batch=hooked_batch) == []


def test_a_canceled_batch_sends_batch_completed(user):
    hooked_batch = batch(user, events=["completed"])
    batch_cancel(batch=hooked_batch)
    assert messages(batch=hooked_batch) == [("batch.completed", HOOK)]


def test_a_pending_message_cannot_be_redelivered_and_a_failed_one_is_tried_once_more(user):
    job = hooked(user)
    job_claim(job_id=job.id)
    message = WebhookMessage.objects.get()
    with pytest.raises(DeliveryPending):
        message_redeliver(message=message)
    WebhookMessage.objects.filter(pk=message.pk).update(status=DeliveryStatus.FAILED)
    before = timezone.now()
    again = message_redeliver(message=message)
    assert again.status == DeliveryStatus.PENDING
    assert before <= again.next_attempt_at == again.retry_until


def test_an_idempotency_key_replays_only_the_same_webhook(user):
    first = job_submit(
        owner=user, kind="summarize", input={"text": "Hi."}, idempotency_key="k", webhook=HOOK
    )
    again = job_submit(
        owner=user, kind="summarize", input={"text": "Hi."}, idempotency_key="k", webhook=HOOK
    )
    assert again.replayed
    assert again.job.pk == first.job.pk
    with pytest.raises(IdempotencyKeyReused):
        job_submit(owner=user, kind="summarize", input={"text": "Hi."}, idempotency_key="k")
