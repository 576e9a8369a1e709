"""The batch dispatcher: a batch's items are rows first, handed to the broker a window at a time.

A round publishes, for every batch not finished or canceled, its next items in submission
order until AIJOBS_BATCH_WINDOW of them are published and unfinished. The batches take turns
(owners first, then each owner's batches, oldest first), so a huge batch neither floods the
broker nor starves anyone else's batch. A job outside any batch is published at once on
commit, to a queue of its own (the items go to AIJOBS_BATCH_QUEUE), and with Redis ahead of
every batch item on a worker that takes both (AIJOBS_BATCH_PRIORITY): it waits for the next
free worker slot, not behind the batches' windows.

With AIJOBS_BATCH_MAX_IN_FLIGHT, while jobs submitted on their own are about, the batches
together never have more items out than that: a round publishes only what the cap leaves
room for, still in turn. A batch large enough to fill every worker slot would otherwise
leave a job submitted on its own waiting for a slot, or on a worker of its own, waiting for
a database and a provider the batch keeps busy. With no single job about, the windows alone
bound the batches, so they use the whole fleet.

Rounds run when a batch is submitted (batches_kick), after its items finish
(batch_items_finished: a worker process runs one round for the items it finished since its
last, and ends a batch at once after its last item) and every AIJOBS_BATCH_DISPATCH_INTERVAL
from beat.
Two rounds at once never publish past a window: each locks the batch rows it works on
(SKIP LOCKED, so neither waits), and an item published is marked in the same transaction
and sent only once it commits, as a single job is. A round's items go ITEMS_PER_MESSAGE to
a message, run in turn by one worker slot (one to a message while jobs submitted on their own
are about); each still counts in its batch's window until it ends, and one sent again (the
reaper's, a retry, an item handed back) goes alone.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta
from functools import partial
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from celery_app import app as celery_app
from jobs import events, rows, webhooks
from jobs.models import LIVE, UNFINISHED, Job, WebhookEvent
from jobs.submission import batch_items_send

log = logging.getLogger(__name__)

# The task that runs a round; workers.tasks registers under this name.
DISPATCH_TASK = "aijobs.dispatch_batches"
# Items one round publishes at most, so its transaction and its sends stay short; a round
# that reaches it is followed by another at once.
ROUND_LIMIT = 500
SINGLE_JOBS_GRACE = timedelta(seconds=2)
# Items sent in one message, run in turn by one worker slot. With a message per item, its
# receipt, decoding and acknowledgement were about a fifth of an item's worker CPU, and one
# worker process is what bounds a batch (PERFORMANCE.md, g); a worker hands back the items
# of a message it has not begun after workers.runner.ITEMS_SECONDS, so slow calls still
# get a slot each.
ITEMS_PER_MESSAGE = 8


def batches_dispatch() -> int:
    """Run rounds until the batches' windows are full; the number of items published."""
    published = 0
    while True:
        sent = _round()
        published += sent
        if sent < ROUND_LIMIT:
            return published


def _round() -> int:
    with transaction.atomic():
        batch_ids = rows.batches_lock_live()
        if not batch_ids:
            return 0
        now = timezone.now()
        singles_about = _single_jobs_about()
        # With no room the statement still runs: it also finishes batches with nothing left.
        published = rows.batch_items_publish(
            batch_ids=batch_ids,
            window=settings.AIJOBS_BATCH_WINDOW,
            limit=min(ROUND_LIMIT, _room(singles_about)),
            now=now,
            # A batch that starts or ends in this round gets its message in the same statement.
            started_ids=[webhooks.message_id(pk, WebhookEvent.BATCH_STARTED) for pk in batch_ids],
            completed_ids=[
                webhooks.message_id(pk, WebhookEvent.BATCH_COMPLETED) for pk in batch_ids
            ],
            retry_until=webhooks.retry_until(now),
        )
        if published.job_ids:
            # A message of items keeps a worker thread busy back to back, and a process that
            # also runs jobs submitted on their own then has their threads wait for the
            # interpreter at every step (PERFORMANCE.md, h with one worker for both).
            per_message = 1 if singles_about else ITEMS_PER_MESSAGE
            transaction.on_commit(
                partial(batch_items_send, published.job_ids, per_message=per_message)
            )
        webhooks.messages_hand_over(published.message_ids)
    return len(published.job_ids)


def _room(singles_about: bool) -> int:
    """Items AIJOBS_BATCH_MAX_IN_FLIGHT leaves room for while single jobs are about (a round's
    worth without the cap, or with none about).

    Counted on the dispatcher's in-flight index, after the round locked its batches: two
    rounds only run at once on different batches (a batch submitted during a round), and
    only then can they go past the cap together, by the second round's items.
    """
    cap = settings.AIJOBS_BATCH_MAX_IN_FLIGHT
    if not cap or not singles_about:
        return ROUND_LIMIT
    out = Job.objects.filter(
        batch__isnull=False, enqueued_at__isnull=False, status__in=UNFINISHED
    ).count()
    return max(0, cap - out)


def _single_jobs_about() -> bool:
    """Whether a job submitted on its own is queued or running, or one started within
    SINGLE_JOBS_GRACE: someone submitting jobs one after another has one about all along,
    and between two of them the batches must not take back the whole machine."""
    singles = Job.objects.filter(batch__isnull=True)
    recent = timezone.now() - SINGLE_JOBS_GRACE
    # The first from the job_single_live index; the second from the last claims (job_last_claimed).
    return (
        singles.filter(status__in=LIVE).exists() or singles.filter(started_at__gt=recent).exists()
    )


def batches_kick() -> None:
    """Have a worker run a round once the current transaction commits (at once outside one).

    Call it when a batch is submitted. A kick the broker refuses is only logged: beat's
    next round does the same work.
    """
    transaction.on_commit(_send_kick)


def _send_kick() -> None:
    try:
        celery_app.send_task(DISPATCH_TASK)
    except Exception as exc:
        log.warning("batch dispatch kick refused by the broker (%s); beat's round will run", exc)


def batch_items_finished(batch_ids: Collection[UUID]) -> None:
    """Items of these batches have finished: their windows have room, so run a round now.

    Called by a worker's round thread (workers/rounds.py), outside any transaction, for
    every item finished since its last round. A round the database refuses (a restart) is
    left to beat's next one: the items themselves are recorded.
    """
    try:
        batches_dispatch()
        for batch_id in batch_ids:
            _end_if_done(batch_id)
    except DatabaseError as exc:
        log.warning("batch dispatch after items finished failed (%s); beat's round will run", exc)
    # After the round: whoever a batch's last item woke sees the batch ended on this pulse.
    events.topics_pulse([events.batch_topic(batch_id) for batch_id in batch_ids])


def _end_if_done(batch_id: UUID) -> None:
    """End the batch now if this was its last item, rather than at beat's next round.

    The round above skips a batch another round holds (SKIP LOCKED), and that round may have
    looked before this item's end committed: then neither would end it. So once nothing is
    left, wait for the batch's lock and run one more round, which ends it as any round does.
    """
    with transaction.atomic():
        if rows.batch_lock_if_done(batch_id=batch_id):
            _round()
