"""Task events, which Flower lists: a worker sends them for a job run and none for beat's chores
(reaper, cleanup) or a batch's items. The publisher's own task-sent event is not the task's to
turn off: it follows task_send_sent_event."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from celery_app import app
from tests.integration.harness import ROOT, stop_process, wait_for, worker_env
from workers import tasks

pytestmark = pytest.mark.integration

# Sent by the publisher (task_send_sent_event), not by the worker that runs the task.
PUBLISHER_EVENTS = {"task-sent"}


@pytest.mark.parametrize(
    "quiet", [tasks.reap, tasks.cleanup, tasks.run_batch_items], ids=["reap", "cleanup", "item"]
)
def test_beats_chores_and_batch_items_ask_the_worker_for_no_task_events(quiet):
    assert quiet.send_events is False
    assert tasks.run_job.send_events is True


@contextlib.contextmanager
def received_events() -> Iterator[list[dict[str, Any]]]:
    """Every event on the broker while the block runs, from the moment it starts."""
    events: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": events.append})
        thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        thread.start()
        try:
            # The events exchange is a fanout: only what is sent after we listen arrives.
            probe = str(uuid.uuid4())
            with app.connection_for_write() as sending:
                dispatcher = app.events.Dispatcher(sending)

                def probe_seen() -> bool:
                    dispatcher.send("worker-aijobs-probe", probe=probe)
                    return any(event.get("probe") == probe for event in events)

                wait_for(probe_seen, timeout=15, what="the event receiver to listen", interval=0.2)
            yield events
        finally:
            receiver.should_stop = True
            thread.join(timeout=15)


def types_for(events: list[dict[str, Any]], task_id: str) -> set[str]:
    return {event["type"] for event in events if event.get("uuid") == task_id}


@pytest.mark.django_db(transaction=True)  # the worker's reaper reads the test database
def test_a_worker_sends_task_events_for_a_job_run_and_none_for_the_reaper(worker):
    with received_events() as events:
        reap_id = tasks.reap.apply_async().id
        wait_for(
            lambda: f"aijobs.reap[{reap_id}] succeeded" in worker.log_path.read_text(),
            timeout=30,
            what="the worker to run the reaper",
        )
        # Runs of jobs that do not exist: the worker skips them, and reports a job's like any.
        item_id = tasks.run_batch_items.apply_async(args=[[str(uuid.uuid4())]]).id
        run_id = tasks.run_job.apply_async(args=[str(uuid.uuid4())]).id
        wait_for(
            lambda: "task-succeeded" in types_for(events, run_id),
            timeout=30,
            what="the job run's task-succeeded event",
        )
        wait_for(
            lambda: f"aijobs.run_batch_items[{item_id}] succeeded" in worker.log_path.read_text(),
            timeout=30,
            what="the worker to run the batch item",
        )
        # One worker sends its events in order: any reaper event came before these.

    assert {"task-received", "task-started", "task-succeeded"} <= types_for(events, run_id)
    assert types_for(events, reap_id) <= PUBLISHER_EVENTS
    assert types_for(events, item_id) <= PUBLISHER_EVENTS


def test_beat_publishes_its_chores_without_task_sent_events(tmp_path, simulator):
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    env = worker_env(simulator.url, AIJOBS_REAPER_INTERVAL="0.5")
    command = [sys.executable, "-m", "celery", "-A", "celery_app", "beat", "--loglevel=INFO"]
    command += ["--schedule", str(tmp_path / "schedule"), "--pidfile", ""]
    with received_events() as events, app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)
        with (tmp_path / "beat.log").open("wb") as log:
            beat = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            # Its log, not the queue: the module's worker may take the messages at once.
            wait_for(
                lambda: (tmp_path / "beat.log").read_text().count("Sending due task reap") >= 2,
                timeout=30,
                what="beat to publish the reaper twice",
            )
        finally:
            stop_process(beat)
            connection.default_channel.queue_purge(queue)

    # The events exchange is the whole broker's: other runs' publishers send to their queues.
    sent = [e for e in events if e["type"] == "task-sent" and e.get("queue") == queue]
    assert sent == []
