"""GET /api/v1/jobs/{id}/events and `Prefer: wait` on the real ASGI server (and the 404s of
every event stream).

The events are published by the tests themselves through jobs.events, as the services and
the worker publish them, so each test decides exactly what the stream holds.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import timezone

from jobs.events import events_key, job_event_publish
from jobs.models import Job
from jobs.ratelimit import get_redis
from tests.helpers import session_cookie
from tests.integration.harness import ApiClient, Event, EventStream, wait_for
from tests.webapp.test_batch_views import make_batch

pytestmark = pytest.mark.django_db(transaction=True)

WAITERS = 60
# The waiters' server: fewer pooled connections and threads than waiters, by far.
FEW = "4"


def queued_job(owner) -> Job:
    return Job.objects.create(
        owner=owner, kind="summarize", model="claude-haiku-4-5", input={"text": "A story."}
    )


def finish(job: Job) -> None:
    """The job succeeds, and its events say so, as the worker's finish does."""
    Job.objects.filter(pk=job.pk).update(
        status="succeeded",
        result={"summary": "Short.", "key_points": []},
        finished_at=timezone.now(),
    )
    job_event_publish(job.id, "status", {"status": "succeeded"})
    job_event_publish(job.id, "done", {"status": "succeeded"})


def stream(server, job_id, token: str, **headers: str) -> EventStream:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return EventStream(f"{server.url}/api/v1/jobs/{job_id}/events", {**auth, **headers})


def test_a_stream_sends_the_job_its_output_and_the_finished_job_then_ends(
    web_server, asgi_api, user, token
):
    job = queued_job(user)
    events = stream(web_server, job.id, token)
    assert events.status == 200
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.headers["cache-control"] == "no-cache"
    assert events.headers["x-accel-buffering"] == "no"

    first = events.next()
    assert first == Event("status", asgi_api.request("GET", f"/jobs/{job.id}").body)

    output = {"text": '{"summary": "Sho', "partial": {"summary": "Sho"}}
    output_id = job_event_publish(job.id, "output", output)
    assert events.next() == Event("output", output, output_id)

    finish(job)
    status, done = events.events(until="done")
    final = asgi_api.request("GET", f"/jobs/{job.id}").body
    assert (status.event, status.data) == ("status", final)
    assert (done.event, done.data) == ("done", final)
    assert status.id < done.id
    assert events.next() is None, "the stream ends after done"


def test_resuming_with_last_event_id_loses_and_repeats_nothing(web_server, user, token):
    job = queued_job(user)
    published = [
        job_event_publish(job.id, "output", {"text": f"{n} ", "partial": None}) for n in range(5)
    ]

    first = stream(web_server, job.id, token)
    seen: list[Event] = []
    while len(seen) < 3:
        item = first.next()
        if isinstance(item, Event) and item.id:
            seen.append(item)
    first.close()
    published += [job_event_publish(job.id, "output", {"text": "more", "partial": None})]

    resumed = stream(web_server, job.id, token, **{"Last-Event-ID": seen[-1].id})
    assert resumed.next().event == "status", "the job as it is now comes first, without an id"
    finish(job)
    rest = [event for event in resumed.events() if event.event == "output"]

    assert [event.id for event in seen + rest] == published


def test_an_idle_stream_gets_keep_alive_comments(web_server, user, token):
    events = stream(web_server, queued_job(user).id, token)
    assert isinstance(events.next(), Event)
    assert events.next() == ": keep-alive"


def test_a_finished_job_streams_its_state_and_done_at_once(web_server, user, token):
    job = queued_job(user)
    finish(job)
    get_redis().delete(events_key(job.id))  # its replay buffer expired long ago

    found = stream(web_server, job.id, token).events()

    assert [event.event for event in found] == ["status", "done"]
    assert found[1].data["status"] == "succeeded"


@pytest.mark.parametrize("noun", ["jobs", "batches"])
@pytest.mark.parametrize("which", ["another user's", "missing", "malformed"])
def test_a_stream_is_404_exactly_where_the_job_or_batch_is(
    web_server, user, other_token, token, noun, which
):
    owned = {"jobs": queued_job, "batches": make_batch}[noun]
    target = {
        "another user's": owned(user).id,
        "missing": "00000000-0000-4000-8000-000000000000",
        "malformed": f"not-one-of-the-{noun}",
    }[which]
    asker = other_token if which == "another user's" else token
    url = f"{web_server.url}/api/v1/{noun}/{target}/events"
    events = EventStream(url, {"Authorization": f"Bearer {asker}"})

    assert events.status == 404
    assert (
        events.body() == ApiClient(web_server.url, asker).request("GET", f"/{noun}/{target}").body
    )


def test_a_stream_needs_a_token_or_a_session(web_server, user, client):
    job = queued_job(user)
    assert stream(web_server, job.id, token="").status == 401

    events = stream(web_server, job.id, token="", Cookie=session_cookie(client, user))
    assert events.status == 200
    assert events.next().data["id"] == str(job.id)


def test_streams_hold_no_database_connection_while_they_wait(start_web_server, user, token):
    """More streams than the server has pooled connections, and the API still answers."""
    server = start_web_server(AIJOBS_DB_POOL_SIZE="2")
    job = queued_job(user)
    streams = [stream(server, job.id, token) for _ in range(6)]
    assert all(isinstance(events.next(), Event) for events in streams)

    job_event_publish(job.id, "status", {"status": "running"})
    assert all(events.next().event == "status" for events in streams)

    assert ApiClient(server.url, token).request("GET", f"/jobs/{job.id}").status == 200
    for events in streams:
        events.close()


def blocked_readers() -> int:
    """Clients of the shared Redis now blocked in XREAD (a waiter of any process)."""
    return sum(
        1
        for client in get_redis().client_list()
        if client["cmd"] == "xread" and "b" in client["flags"]
    )


def test_many_waiters_do_not_hold_up_a_submission(start_web_server, user, token):
    """The stall of issue 11: waiters held every thread and pooled connection a server had."""
    server = start_web_server(AIJOBS_DB_POOL_SIZE=FEW, ASGI_THREADS=FEW)
    api = ApiClient(server.url, token)
    job = queued_job(user)
    before = blocked_readers()
    with ThreadPoolExecutor(WAITERS) as pool:
        waiting = [
            pool.submit(api.request, "GET", f"/jobs/{job.id}", headers={"Prefer": "wait=30"})
            for _ in range(WAITERS)
        ]
        wait_for(lambda: blocked_readers() >= before + WAITERS, timeout=30, what="the waiters")

        submitted = api.submit("summarize", {"text": "Submitted while sixty clients wait."})

        assert submitted.status == 201
        assert not any(future.done() for future in waiting), "answered before the waiters' deadline"
        finish(job)
        answers = [future.result() for future in waiting]
    assert {answer.body["status"] for answer in answers} == {"succeeded"}
    assert {answer.headers["preference-applied"] for answer in answers} == {"wait=30"}


def test_a_wait_on_submission_ends_when_the_job_does(web_server, asgi_api, user):
    answer: dict = {}
    request = threading.Thread(
        target=lambda: answer.update(
            response=asgi_api.submit("summarize", {"text": "Wait for me."}, Prefer="wait=30")
        )
    )
    request.start()
    job = wait_for(lambda: Job.objects.filter(owner=user).first(), timeout=15, what="the job")
    finish(job)
    request.join(timeout=25)

    assert not request.is_alive(), "answered before the wait's deadline"
    assert answer["response"].status == 201
    assert answer["response"].body["status"] == "succeeded"
