"""The dispatcher's window and turns, against the real database (publishing is observed)."""

from __future__ import annotations

import threading
from datetime import timedelta
from uuid import UUID

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from jobs import dispatch, submission
from jobs.models import Batch, BatchStatus, Job, Status
from jobs.submission import job_submit
from tests.helpers import at_once, batch_of
from tests.integration.harness import wait_for

pytestmark = pytest.mark.django_db

WINDOW = 3
# Before the `messages` fixture replaces it with its recorder.
REAL_ENQUEUE = submission.batch_items_enqueue


@pytest.fixture(autouse=True)
def window(settings):
    settings.AIJOBS_BATCH_WINDOW = WINDOW


@pytest.fixture
def messages(monkeypatch):
    """The items of each message handed to the broker, in order."""
    sent: list[list[UUID]] = []

    def enqueue(job_ids: list[UUID]) -> bool:
        sent.append(list(job_ids))
        return True

    monkeypatch.setattr(submission, "batch_items_enqueue", enqueue)
    return sent


def flat(messages: list[list[UUID]]) -> list[UUID]:
    """The ids of the items handed to the broker, in order, whatever message took them."""
    return [job_id for message in messages for job_id in message]


@pytest.fixture
def run_round(django_capture_on_commit_callbacks, messages):
    """One dispatch call, its commit's sends run; what it published, as `name#position`."""

    def run() -> list[str]:
        before = len(flat(messages))
        with django_capture_on_commit_callbacks(execute=True):
            dispatch.batches_dispatch()
        return [label(job_id) for job_id in flat(messages)[before:]]

    return run


NAMES: dict[UUID, str] = {}


def named(batch: Batch, name: str) -> Batch:
    NAMES[batch.id] = name
    return batch


def label(job_id: UUID) -> str:
    job = Job.objects.get(pk=job_id)
    return f"{NAMES[job.batch_id]}#{job.position}"


def texts(n: int) -> list[str]:
    return [f"Item {i}. It says little." for i in range(n)]


def finish(batch: Batch, *positions: int, status: str = Status.SUCCEEDED) -> None:
    Job.objects.filter(batch=batch, position__in=positions).update(
        status=status, finished_at=timezone.now()
    )


def test_each_round_fills_every_window_taking_owners_then_batches_in_turn(
    user, other_user, run_round
):
    # alice's two batches, then mallory's one, each created after the one before.
    a1 = named(batch_of(user, texts(5)), "a1")
    named(batch_of(user, texts(5)), "a2")
    b1 = named(batch_of(other_user, texts(5)), "b1")

    # The first of each batch (alice's oldest, mallory's, alice's next), then the second...
    assert run_round() == [
        "a1#1", "b1#1", "a2#1",
        "a1#2", "b1#2", "a2#2",
        "a1#3", "b1#3", "a2#3",
    ]  # fmt: skip
    assert run_round() == [], "every window is full"

    finish(a1, 1, 2)
    finish(b1, 2)
    assert run_round() == ["a1#4", "b1#4", "a1#5"]
    finish(a1, 3, 4, 5, status=Status.FAILED)
    assert run_round() == [], "a1 has nothing left; a2 and b1 have no room"


def test_a_round_limit_is_shared_in_turn_and_the_next_round_goes_on(
    user, other_user, run_round, monkeypatch
):
    big = named(batch_of(user, texts(40)), "big")
    small = named(batch_of(other_user, texts(4)), "small")
    monkeypatch.setattr(dispatch, "ROUND_LIMIT", 4)
    monkeypatch.setattr(dispatch.settings, "AIJOBS_BATCH_WINDOW", 10)

    # Rounds of 4 take turns: the older, bigger batch never has the first round to itself.
    assert run_round() == [
        "big#1", "small#1", "big#2", "small#2",
        "big#3", "small#3", "big#4", "small#4",
        "big#5", "big#6", "big#7", "big#8", "big#9", "big#10",
    ]  # fmt: skip
    assert Job.objects.filter(batch=big, enqueued_at__isnull=False).count() == 10
    assert Job.objects.filter(batch=small, enqueued_at__isnull=False).count() == 4


def single_job(user) -> Job:
    """A job submitted on its own, queued."""
    return job_submit(owner=user, kind="summarize", input={"text": "On its own. Alone."}).job


def test_the_batches_together_never_have_more_out_than_the_cap_still_in_turn(
    user, other_user, run_round, settings
):
    settings.AIJOBS_BATCH_MAX_IN_FLIGHT = 4
    single_job(user)
    a1 = named(batch_of(user, texts(5)), "a1")
    b1 = named(batch_of(other_user, texts(5)), "b1")

    assert run_round() == ["a1#1", "b1#1", "a1#2", "b1#2"]
    assert run_round() == [], "each window has room, the cap has none"
    finish(b1, 1)
    assert run_round() == ["a1#3"]
    finish(a1, 1, 2, 3)
    assert run_round() == ["a1#4", "b1#3", "a1#5"]


def test_a_batch_with_nothing_left_finishes_while_the_cap_is_full(
    user, other_user, run_round, settings
):
    settings.AIJOBS_BATCH_MAX_IN_FLIGHT = 1
    single_job(user)
    named(batch_of(user, texts(3)), "big")
    small = named(batch_of(other_user, texts(1)), "small")
    assert run_round() == ["big#1"]

    finish(small, 1, status=Status.CANCELED)
    assert run_round() == []
    small.refresh_from_db()
    assert small.status == BatchStatus.FINISHED


def test_the_cap_holds_while_a_single_job_runs_or_started_of_late_and_only_then(
    user, run_round, settings
):
    settings.AIJOBS_BATCH_MAX_IN_FLIGHT = 1
    settings.AIJOBS_BATCH_WINDOW = 2
    batch = named(batch_of(user, texts(6)), "b")
    assert run_round() == ["b#1", "b#2"], "no single job about: the window alone"
    finish(batch, 1, 2)

    job = single_job(user)
    assert run_round() == ["b#3"], "a single job queued"
    finish(batch, 3)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=Status.SUCCEEDED, started_at=now, finished_at=now)
    assert run_round() == ["b#4"], "one started of late: another may be on its way"
    finish(batch, 4)

    long_ago = now - dispatch.SINGLE_JOBS_GRACE - timedelta(seconds=1)
    Job.objects.filter(pk=job.pk).update(started_at=long_ago)
    assert run_round() == ["b#5", "b#6"], "none about any more: the window alone"


def test_a_batch_runs_at_its_first_dispatch_and_finishes_with_its_last_item(user, run_round):
    batch = named(batch_of(user, texts(2)), "b")
    assert (batch.status, batch.started_at) == (BatchStatus.QUEUED, None)

    run_round()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.RUNNING
    assert batch.started_at is not None

    finish(batch, 1)
    run_round()
    batch.refresh_from_db()
    assert (batch.status, batch.finished_at) == (BatchStatus.RUNNING, None)

    finish(batch, 2, status=Status.CANCELED)
    run_round()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.FINISHED
    assert batch.finished_at >= batch.started_at


def test_canceled_and_finished_batches_get_nothing(user, run_round):
    for status in (BatchStatus.CANCELED, BatchStatus.FINISHED):
        batch = named(batch_of(user, texts(2)), status)
        Batch.objects.filter(pk=batch.pk).update(status=status)

    assert run_round() == []


def test_a_rounds_items_go_a_few_to_a_message_in_turn(
    user, other_user, run_round, messages, monkeypatch
):
    named(batch_of(user, texts(3)), "a")
    named(batch_of(other_user, texts(3)), "b")
    monkeypatch.setattr(dispatch, "ITEMS_PER_MESSAGE", 4)

    run_round()

    assert [[label(job_id) for job_id in message] for message in messages] == [
        ["a#1", "b#1", "a#2", "b#2"],
        ["a#3", "b#3"],
    ]


def test_while_a_single_job_is_about_items_go_one_to_a_message(user, run_round, messages):
    single_job(user)
    named(batch_of(user, texts(3)), "a")

    assert run_round() == ["a#1", "a#2", "a#3"]
    assert list(map(len, messages)) == [1, 1, 1]


def test_items_refused_by_the_broker_are_published_by_a_later_round(user, run_round, monkeypatch):
    batch = named(batch_of(user, texts(3)), "b")
    monkeypatch.setattr(dispatch, "ITEMS_PER_MESSAGE", 2)
    tries: list[str] = []

    def broker_down(name: str, **options: object) -> None:
        tries.append(name)
        raise ConnectionError("broker down")

    enqueue = submission.batch_items_enqueue
    monkeypatch.setattr(submission, "batch_items_enqueue", REAL_ENQUEUE)
    monkeypatch.setattr(submission.celery_app, "send_task", broker_down)
    run_round()

    assert len(tries) == 1, "one refusal: the second message is not tried"
    assert not Job.objects.filter(batch=batch, enqueued_at__isnull=False).exists()
    monkeypatch.setattr(submission, "batch_items_enqueue", enqueue)
    assert run_round() == ["b#1", "b#2", "b#3"]


def test_an_item_whose_publish_failed_after_it_ran_is_in_the_window_again(user, run_round):
    """The reaper's resend of a lapsed lease can fail: the item is unpublished, and the
    dispatcher's to send, whatever its status."""
    batch = named(batch_of(user, texts(4)), "b")
    run_round()
    Job.objects.filter(batch=batch, position=2).update(status=Status.RUNNING, enqueued_at=None)

    assert run_round() == ["b#2"]


def test_a_kick_sends_the_dispatch_task_once_the_batch_is_committed(
    monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[str] = []
    monkeypatch.setattr(dispatch.celery_app, "send_task", lambda name, **_: sent.append(name))

    with django_capture_on_commit_callbacks(execute=True):
        dispatch.batches_kick()
        assert sent == [], "not before the commit"

    assert sent == [dispatch.DISPATCH_TASK]


def test_the_beat_runs_a_round_every_interval(settings):
    entries = [
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "aijobs.dispatch_batches"
    ]
    assert [e["schedule"] for e in entries] == [settings.AIJOBS_BATCH_DISPATCH_INTERVAL]


@pytest.mark.django_db(transaction=True)
def test_rounds_at_once_never_publish_past_a_window(user, other_user, messages):
    batches = [batch_of(owner, texts(30)) for owner in (user, other_user, user)]

    at_once([dispatch.batches_dispatch] * 6)

    published = flat(messages)
    assert len(published) == len(set(published)) == WINDOW * len(batches)
    for batch in batches:
        assert Job.objects.filter(batch=batch, enqueued_at__isnull=False).count() == WINDOW


def test_items_in_flight_are_never_sent_again_by_the_dispatcher(user, run_round):
    """However long an item has been out, a second message for it is the reaper's call."""
    batch = named(batch_of(user, texts(4)), "b")
    run_round()
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(batch=batch, enqueued_at__isnull=False).update(enqueued_at=long_ago)

    assert run_round() == []


class HeldBatch:
    """A dispatcher's round in another transaction, holding the batch's row lock until
    released, as a round that looked before an item's end committed does."""

    def __init__(self, batch: Batch) -> None:
        self.batch, self.held, self.release = batch, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold)

    def __enter__(self) -> HeldBatch:
        self.thread.start()
        assert self.held.wait(10), "the lock was taken"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.thread.join(10)

    def _hold(self) -> None:
        try:
            with transaction.atomic():
                Batch.objects.select_for_update().get(pk=self.batch.pk)
                self.held.set()
                self.release.wait(10)
        finally:
            connections.close_all()


def in_thread(call) -> threading.Thread:
    def run() -> None:
        try:
            call()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_last_item_ends_its_batch_though_a_round_holding_it_looked_too_early(user, messages):
    batch = batch_of(user, texts(2))
    dispatch.batches_dispatch()
    finish(batch, 1, 2)

    with HeldBatch(batch):
        ending = in_thread(lambda: dispatch.batch_items_finished([batch.id]))
        wait_for(lambda: lock_waiters() > 0, timeout=10, what="the end to wait for the lock")
    ending.join(10)

    batch.refresh_from_db()
    assert batch.status == BatchStatus.FINISHED
    assert batch.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_an_item_with_others_left_waits_for_no_lock(user, messages):
    batch = batch_of(user, texts(2))
    dispatch.batches_dispatch()
    finish(batch, 1)

    with HeldBatch(batch):
        ending = in_thread(lambda: dispatch.batch_items_finished([batch.id]))
        ending.join(10)
        assert not ending.is_alive(), "it returned while the lock was still held"

    batch.refresh_from_db()
    assert batch.status == BatchStatus.RUNNING
