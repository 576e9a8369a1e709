"""GET /api/v1/batches/{id}/events, and the pulse stream of the lists, on the real ASGI server.

The tests change the batch's rows and pulse its topic themselves, as the worker and the
services do, so each decides exactly what the stream has to tell.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from jobs.events import _pulse, batch_topic, owner_topic
from jobs.models import Batch, Job
from tests.helpers import session_cookie
from tests.integration.harness import ApiClient, Event, EventStream, entry_id
from tests.webapp.test_batch_views import make_batch, started

pytestmark = pytest.mark.django_db(transaction=True)


def stream(server, batch_id, token: str, **headers: str) -> EventStream:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return EventStream(f"{server.url}/api/v1/batches/{batch_id}/events", {**auth, **headers})


def next_event(events: EventStream) -> Event | None:
    """The next event, keep-alive comments skipped."""
    while isinstance(item := events.next(), str):
        pass
    return item


def finish_item(batch: Batch, position: int, status: str = "succeeded") -> None:
    """An item ends and its batch's topic pulses, as at the end of a worker's attempt."""
    Job.objects.filter(batch=batch, position=position).update(
        status=status, finished_at=timezone.now(), cost_usd="0.001"
    )
    _pulse((batch_topic(batch.id),))


def end(batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(status="finished", finished_at=timezone.now())
    _pulse((batch_topic(batch.id),))


def progress_of(batch_json: dict) -> dict:
    return {name: batch_json[name] for name in ("counts", "total", "usage")}


def test_a_stream_sends_the_batch_its_progress_and_the_finished_batch_then_ends(
    web_server, asgi_api, user
):
    batch = started(make_batch(user, statuses=("running", "running", "queued")), 5)
    events = stream(web_server, batch.id, asgi_api.token)
    assert events.status == 200
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.headers["cache-control"] == "no-cache"
    assert events.headers["x-accel-buffering"] == "no"

    first = next_event(events)
    assert first == Event("status", asgi_api.request("GET", f"/batches/{batch.id}").body)

    finish_item(batch, 1)
    progress = next_event(events)
    now = asgi_api.request("GET", f"/batches/{batch.id}").body
    assert (progress.event, progress.data) == ("progress", progress_of(now))
    assert progress.data["counts"]["succeeded"] == 1
    assert progress.id

    finish_item(batch, 2, "failed")
    Job.objects.filter(batch=batch, position=3).update(status="canceled")
    end(batch)
    rest = events.events(until="done")
    final = asgi_api.request("GET", f"/batches/{batch.id}").body
    assert final["status"] == "finished"
    assert [(event.event, event.data) for event in rest][-2:] == [
        ("status", final),
        ("done", final),
    ]
    assert all(event.id for event in rest)
    assert next_event(events) is None, "the stream ends after done"


def test_a_pulse_that_changed_nothing_sends_nothing(web_server, asgi_api, user):
    batch = started(make_batch(user, statuses=("running", "queued")), 5)
    events = stream(web_server, batch.id, asgi_api.token)
    assert next_event(events).event == "status"

    _pulse((batch_topic(batch.id),))
    _pulse((batch_topic(batch.id),))
    finish_item(batch, 1)

    follows = next_event(events)
    assert follows.event == "progress", "the pulses with nothing new sent no event"
    assert follows.data["counts"]["succeeded"] == 1


def test_resuming_with_last_event_id_repeats_nothing(web_server, asgi_api, user):
    batch = started(make_batch(user, statuses=("running", "running", "queued")), 5)
    first = stream(web_server, batch.id, asgi_api.token)
    assert next_event(first).event == "status"
    finish_item(batch, 1)
    seen = next_event(first)
    assert seen.event == "progress"
    first.close()

    resumed = stream(web_server, batch.id, asgi_api.token, **{"Last-Event-ID": seen.id})
    now = next_event(resumed)
    assert (now.event, now.id) == ("status", None), "the batch as it is now, without an id"
    finish_item(batch, 2)
    later = next_event(resumed)

    assert later.event == "progress"
    assert entry_id(later) > entry_id(seen)
    assert later.data["counts"]["succeeded"] == 2, "the next change, not the one seen before"


def test_a_finished_batch_streams_its_state_and_done_at_once(web_server, asgi_api, user):
    batch = make_batch(user, statuses=("succeeded", "failed"), status="finished")

    found = stream(web_server, batch.id, asgi_api.token).events()

    assert [event.event for event in found] == ["status", "done"]
    assert found[1].data == asgi_api.request("GET", f"/batches/{batch.id}").body


def test_an_idle_stream_gets_keep_alive_comments(web_server, asgi_api, user):
    batch = started(make_batch(user, statuses=("running", "queued")), 5)
    events = stream(web_server, batch.id, asgi_api.token)
    assert isinstance(events.next(), Event)
    assert events.next() == ": keep-alive"


def test_a_batch_ended_by_a_round_without_a_pulse_is_seen_ended(web_server, asgi_api, user):
    """Beat's round ends a batch whose last item was canceled on its own: no item's pulse."""
    batch = started(make_batch(user, statuses=("succeeded", "running")), 5)
    events = stream(web_server, batch.id, asgi_api.token)
    assert next_event(events).event == "status"
    finish_item(batch, 2, "canceled")
    assert next_event(events).event == "progress"

    Batch.objects.filter(pk=batch.pk).update(status="finished", finished_at=timezone.now())

    assert [event.event for event in events.events()] == ["status", "done"]


def test_a_stream_needs_a_token_or_a_session(web_server, user, client):
    batch = make_batch(user)
    assert stream(web_server, batch.id, token="").status == 401

    events = stream(web_server, batch.id, token="", Cookie=session_cookie(client, user))
    assert events.status == 200
    assert next_event(events).data["id"] == str(batch.id)


# --- the lists' stream: one for a page, whatever it shows -------------------------------------


def test_the_lists_stream_pulses_for_the_users_own_changes_only(
    web_server, client, user, other_user
):
    events = EventStream(f"{web_server.url}/jobs/events", {"Cookie": session_cookie(client, user)})
    assert events.status == 200
    assert events.headers["content-type"].startswith("text/event-stream")

    _pulse((owner_topic(other_user.pk),))
    _pulse((owner_topic(user.pk),))

    change = next_event(events)
    assert change.event == "change"
    assert change.id
    assert events.next() == ": keep-alive", "the other user's pulse came before and sent nothing"


def test_the_lists_stream_needs_a_session(web_server):
    events = EventStream(f"{web_server.url}/jobs/events", {})

    assert events.status == 302
    assert events.headers["location"].startswith("/login/")


def test_batch_and_list_streams_hold_no_database_connection_while_they_wait(
    start_web_server, user, token, client
):
    """More streams than the server has pooled connections, and the API still answers."""
    server = start_web_server(AIJOBS_DB_POOL_SIZE="2")
    batch = started(make_batch(user, statuses=("running", "queued")), 5)
    cookie = session_cookie(client, user)
    streams = [stream(server, batch.id, token) for _ in range(3)]
    streams += [EventStream(f"{server.url}/jobs/events", {"Cookie": cookie}) for _ in range(3)]
    assert all(events.status == 200 for events in streams)
    assert all(next_event(events).event == "status" for events in streams[:3])

    finish_item(batch, 1)
    assert all(next_event(events).event == "progress" for events in streams[:3])

    assert ApiClient(server.url, token).request("GET", f"/batches/{batch.id}").status == 200
    for events in streams:
        events.close()
