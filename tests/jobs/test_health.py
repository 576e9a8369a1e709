"""/health answers 200 only when all is well, and 503 with the database down, the broker down
or jobs stalled, even while every worker answers pings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from celery_app import app as celery_app
from devtools.servers import free_port
from jobs.attempts import job_claim
from jobs.health import jobs_stalled
from jobs.models import Job
from jobs.submission import job_submit
from tests.helpers import batch_of

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/health"


def submit(user) -> Job:
    return job_submit(owner=user, kind="summarize", input={"text": "Waiting. Still waiting."}).job


def make_stale(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))


@contextmanager
def database_unreachable() -> Iterator[None]:
    """Point Django's connection at a port nothing listens on, then back: a real refusal."""
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.close_pool()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.close_pool()
        connection.settings_dict["PORT"] = saved


@contextmanager
def broker_unreachable() -> Iterator[None]:
    """Point the publishing URL at a port nothing listens on; health connects afresh each time."""
    saved = celery_app.conf.broker_write_url
    celery_app.conf.broker_write_url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        yield
    finally:
        celery_app.conf.broker_write_url = saved


def test_all_well_is_exactly_200(client):
    answer = client.get(HEALTH)

    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert (body["ok"], body["database"], body["broker"], body["jobs_stalled"]) == (
        True,
        True,
        True,
        False,
    )


@pytest.mark.django_db(transaction=True)
def test_the_database_down_is_503(client):
    with database_unreachable():
        answer = client.get(HEALTH)

    assert answer.status_code == 503
    assert (answer.json()["ok"], answer.json()["database"]) == (False, False)
    assert client.get(HEALTH).status_code == 200, "healthy again once the database answers"


def test_the_broker_down_is_503(client):
    with broker_unreachable():
        answer = client.get(HEALTH)

    assert answer.status_code == 503
    body = answer.json()
    assert (body["ok"], body["broker"], body["database"]) == (False, False, True)
    assert body["workers"] == [], "no ping is tried without a broker"


def test_stalled_jobs_are_503_until_a_claim_shows_workers_consuming(client, user, settings):
    settings.AIJOBS_STALL_SECONDS = 60
    make_stale(submit(user))

    stalled = client.get(HEALTH)
    assert stalled.status_code == 503
    assert (stalled.json()["ok"], stalled.json()["jobs_stalled"]) == (False, True)

    job_claim(job_id=submit(user).id)
    assert client.get(HEALTH).status_code == 200, "a recent claim shows workers are consuming"


def test_jobs_waiting_long_with_no_claim_are_stalled(user, settings):
    settings.AIJOBS_STALL_SECONDS = 60
    make_stale(submit(user))
    assert jobs_stalled()

    job_claim(job_id=submit(user).id)

    assert not jobs_stalled(), "a recent claim shows workers are consuming"


def test_a_fresh_queue_is_not_stalled(user):
    submit(user)
    assert not jobs_stalled()


def test_an_old_claim_does_not_hide_a_stall(user, settings):
    settings.AIJOBS_STALL_SECONDS = 60
    claimed = submit(user)
    job_claim(job_id=claimed.id)
    Job.objects.filter(pk=claimed.pk).update(started_at=timezone.now() - timedelta(minutes=10))
    make_stale(submit(user))

    assert jobs_stalled(), "only a claim within the stall window counts"


def test_batch_items_waiting_with_only_single_jobs_claimed_are_stalled(user, settings):
    """A deployment whose workers all take single jobs only (-Q aijobs) runs no batch item."""
    settings.AIJOBS_STALL_SECONDS = 60
    batch = batch_of(user, ["One. Item.", "Two. Item."])
    Job.objects.filter(batch=batch).update(created_at=timezone.now() - timedelta(minutes=5))
    job_claim(job_id=submit(user).id)
    assert jobs_stalled(), "single jobs moving prove nothing of the batch queue"

    item = Job.objects.filter(batch=batch).first()
    job_claim(job_id=item.id)
    assert not jobs_stalled()
