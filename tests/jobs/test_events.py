"""A job's events in Redis: published after the commit, read back in order, bounded, expiring;
and every state change of a job publishing its status."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from django.db import transaction

from jobs import events
from jobs.attempts import (
    CallReport,
    call_begin,
    call_finish,
    job_claim,
    job_fail,
    job_release,
    job_schedule_retry,
)
from jobs.batches import batch_cancel
from jobs.events import (
    job_event_publish,
    job_events_read,
    job_output_publish,
    job_status_publish,
)
from jobs.models import Job, Outcome
from jobs.ratelimit import get_redis
from jobs.submission import job_cancel, job_submit
from jobs.usage import Usage
from tests.helpers import batch_of, succeed


def read(job_id, after=None, block_ms=0):
    return asyncio.run(job_events_read(job_id, after, block_ms))


@pytest.fixture
def job_id():
    return uuid.uuid4()


def test_events_are_read_back_in_order_with_increasing_ids(job_id):
    first = job_event_publish(job_id, "output", {"text": "Hel", "partial": None})
    second = job_event_publish(job_id, "output", {"text": "lo", "partial": None})

    entries = read(job_id)

    assert entries == [
        (first, "output", {"text": "Hel", "partial": None}),
        (second, "output", {"text": "lo", "partial": None}),
    ]
    assert [int(part) for part in second.split("-")] > [int(part) for part in first.split("-")]


def test_reading_after_an_id_gives_only_what_came_later(job_id):
    first = job_event_publish(job_id, "status", {"status": "running"})
    second = job_event_publish(job_id, "status", {"status": "succeeded"})

    assert [entry[0] for entry in read(job_id, after=first)] == [second]
    assert read(job_id, after=second) == []


def test_a_blocked_read_gets_the_next_event(job_id):
    last = job_event_publish(job_id, "status", {"status": "queued"})

    async def wait_then_publish():
        waiting = asyncio.create_task(job_events_read(job_id, last, 10_000))
        await asyncio.to_thread(job_event_publish, job_id, "status", {"status": "running"})
        return await waiting

    entries = asyncio.run(wait_then_publish())

    assert [(event, data) for _, event, data in entries] == [("status", {"status": "running"})]


def test_nothing_to_read_gives_nothing_once_the_wait_is_over(job_id):
    assert read(job_id, block_ms=50) == []
    assert read(job_id) == []


def test_the_replay_buffer_is_trimmed_and_expires(job_id):
    client = get_redis()
    for n in range(events.MAX_EVENTS + 500):
        job_output_publish(job_id, {"text": str(n), "partial": None, "attempt": 1, "seq": 0})
    assert 0 < client.ttl(events.events_key(job_id)) <= events.EXPIRE_SECONDS
    job_event_publish(job_id, "status", {"status": "succeeded"})

    length = client.xlen(events.events_key(job_id))
    assert events.MAX_EVENTS <= length < events.MAX_EVENTS + 500
    assert 0 < client.ttl(events.events_key(job_id)) <= events.EXPIRE_SECONDS
    last_output, status = read(job_id)[-2:]
    assert last_output[1:] == (
        "output",
        {"text": str(events.MAX_EVENTS + 499), "partial": None, "attempt": 1, "seq": 0},
    )
    assert status[1:] == ("status", {"status": "succeeded"})


@pytest.mark.django_db
def test_a_status_inside_a_transaction_is_published_at_its_commit(
    job_id, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        job_status_publish(job_id, "running")
        assert read(job_id) == [], "published before its commit"

    assert [(event, data) for _, event, data in read(job_id)] == [("status", {"status": "running"})]


@pytest.mark.django_db
def test_a_status_whose_transaction_rolled_back_is_never_published(
    job_id, django_capture_on_commit_callbacks
):
    def change_then_fail():
        with transaction.atomic():
            job_status_publish(job_id, "running")
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        change_then_fail()

    assert read(job_id) == []


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_a_final_status_is_followed_by_done(job_id, status, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_status_publish(job_id, status)

    assert [(event, data) for _, event, data in read(job_id)] == [
        ("status", {"status": status}),
        ("done", {"status": status}),
    ]


@pytest.mark.django_db
def test_an_output_event_tells_the_worker_the_job_was_canceled(
    job_id, django_capture_on_commit_callbacks
):
    data = {"text": "{", "partial": {}, "attempt": 1, "seq": 0}
    assert job_output_publish(job_id, data) is False

    with django_capture_on_commit_callbacks(execute=True):
        job_status_publish(job_id, "canceled")

    assert job_output_publish(job_id, data) is True
    assert get_redis().ttl(events.cancel_key(job_id)) > 0


@pytest.mark.django_db
def test_output_events_of_several_jobs_go_together_each_with_its_cancel(
    job_id, django_capture_on_commit_callbacks
):
    other = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        job_status_publish(other, "canceled")
    first, second = {"text": "{", "partial": {}}, {"text": "[", "partial": []}

    assert events.job_outputs_publish([(job_id, first), (other, second)]) == [False, True]
    assert [(event, data) for _, event, data in read(job_id)] == [("output", first)]
    assert read(other)[-1][1:] == ("output", second)


# --- every state change publishes its status once it has committed ----------------------------


@pytest.fixture
def statuses(django_capture_on_commit_callbacks):
    """Run a change as committed (its on-commit callbacks executed), then give the job's
    status and done events, in order."""

    def run(job_id, change):
        with django_capture_on_commit_callbacks(execute=True):
            outcome = change()
        entries = [(event, data["status"]) for _, event, data in read(job_id)]
        return outcome, entries

    return run


@pytest.fixture
def held(user, statuses):
    """A job claimed for its first attempt, its events so far read and dropped."""
    job = job_submit(owner=user, kind="summarize", input={"text": "Hello there. General."}).job
    statuses(job.id, lambda: job_claim(job_id=job.id))
    get_redis().delete(events.events_key(job.id))
    return Job.objects.get(pk=job.id)


@pytest.mark.django_db
def test_a_submission_publishes_queued_then_a_claim_running(
    user, statuses, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = job_submit(owner=user, kind="summarize", input={"text": "Hello there."}).job

    _, entries = statuses(job.id, lambda: job_claim(job_id=job.id))

    assert entries == [("status", "queued"), ("status", "running")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda job: job_fail(job_id=job.id, attempt=1, code="x", message="y"),
            [("status", "failed"), ("done", "failed")],
        ),
        (
            lambda job: job_schedule_retry(
                job_id=job.id, attempt=1, delay=1, code="x", message="y"
            ),
            [("status", "retrying")],
        ),
        (lambda job: job_release(job_id=job.id, attempt=1), [("status", "queued")]),
        (lambda job: job_cancel(job=job), [("status", "canceled"), ("done", "canceled")]),
        (
            lambda job: succeed(job, {"summary": "Done."}, attempt=1),
            [("status", "succeeded"), ("done", "succeeded")],
        ),
    ],
    ids=["fail", "retry", "release", "cancel", "succeed"],
)
def test_each_change_of_a_held_job_publishes_its_status(held, statuses, change, expected):
    outcome, entries = statuses(held.id, lambda: change(held))

    assert outcome
    assert entries == expected


@pytest.mark.django_db
def test_a_change_that_did_not_happen_publishes_nothing(held, statuses):
    stale = [
        lambda: job_fail(job_id=held.id, attempt=2, code="x", message="y"),
        lambda: job_schedule_retry(job_id=held.id, attempt=2, delay=1, code="x", message="y"),
        lambda: job_release(job_id=held.id, attempt=2),
        lambda: job_claim(job_id=held.id),
    ]
    for change in stale:
        _, entries = statuses(held.id, change)
        assert entries == []


@pytest.mark.django_db
def test_an_answer_after_a_cancel_publishes_no_success(held, statuses):
    call = call_begin(job=held, seq=0, reserve_usd=Decimal(0))
    statuses(held.id, lambda: job_cancel(job=held))
    report = CallReport(outcome=Outcome.OK, usage=Usage(input_tokens=5, output_tokens=5))

    recorded, entries = statuses(
        held.id, lambda: call_finish(call=call, report=report, result={"summary": "Late."})
    )

    assert recorded is True
    assert entries == [("status", "canceled"), ("done", "canceled")]


# --- pulses: what a page following many jobs at once wakes on --------------------------------


def newest(topic: str) -> str | None:
    return asyncio.run(events.pulse_last(topic))


@pytest.mark.django_db
def test_a_pulse_stream_keeps_only_its_newest_entry_and_expires(
    django_capture_on_commit_callbacks,
):
    topic = f"test:{uuid.uuid4()}"
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            events.topics_pulse([topic])

    last = newest(topic)
    assert get_redis().xlen(events.pulse_key(topic)) == 1
    assert 0 < get_redis().ttl(events.pulse_key(topic)) <= events.EXPIRE_SECONDS
    assert asyncio.run(events.pulse_wait(topic, None, 50)) == last
    assert asyncio.run(events.pulse_wait(topic, last, 50)) is None


def test_a_blocked_wait_wakes_on_the_next_pulse():
    topic = f"test:{uuid.uuid4()}"
    events._pulse((topic,))
    before = newest(topic)

    async def wait_then_pulse():
        waiting = asyncio.create_task(events.pulse_wait(topic, before, 10_000))
        await asyncio.to_thread(events._pulse, (topic,))
        return await waiting

    woke = asyncio.run(wait_then_pulse())
    assert woke == newest(topic) != before


@pytest.mark.django_db
def test_a_pulse_whose_transaction_rolled_back_is_never_sent(django_capture_on_commit_callbacks):
    topic = f"test:{uuid.uuid4()}"

    def change_then_fail():
        with transaction.atomic():
            events.topics_pulse([topic])
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        change_then_fail()

    assert newest(topic) is None


@pytest.fixture
def pulsed(django_capture_on_commit_callbacks):
    """Run a change as committed; which of the topics pulsed during it."""

    def run(change, *topics: str) -> set[str]:
        before = {topic: newest(topic) for topic in topics}
        with django_capture_on_commit_callbacks(execute=True):
            change()
        return {topic for topic in topics if newest(topic) != before[topic]}

    return run


@pytest.mark.django_db
def test_a_submission_pulses_its_owner(user, other_user, pulsed):
    mine, theirs = events.owner_topic(user.pk), events.owner_topic(other_user.pk)

    found = pulsed(
        lambda: job_submit(owner=user, kind="summarize", input={"text": "Hi."}), mine, theirs
    )

    assert found == {mine}


@pytest.mark.django_db
def test_claiming_and_canceling_a_batch_item_pulse_its_owner_and_its_batch(user, pulsed):
    batch = batch_of(user, ["One item.", "Another item."])
    first, second = Job.objects.filter(batch=batch).order_by("position")
    topics = (events.owner_topic(user.pk), events.batch_topic(batch.id))

    assert pulsed(lambda: job_claim(job_id=first.id), *topics) == set(topics)
    assert pulsed(lambda: job_cancel(job=second), *topics) == set(topics)


@pytest.mark.django_db
def test_canceling_a_batch_pulses_it_once_for_all_its_items(user, pulsed):
    batch = batch_of(user, [f"Item {n}." for n in range(5)])
    topics = (events.owner_topic(user.pk), events.batch_topic(batch.id))

    assert pulsed(lambda: batch_cancel(batch=batch), *topics) == set(topics)
