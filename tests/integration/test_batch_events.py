"""A batch's event stream while a real worker runs it: progress as its items finish, a few
events a second however many items there are, and done as soon as its last item ends (no
beat runs here: the worker's own rounds end it), with the counts GET /batches/{id} gives."""

from __future__ import annotations

import time

import pytest

from jobs.models import FINISHED
from tests.helpers import unique
from tests.integration.harness import Event, EventStream, entry_id
from tests.kinds import example_input

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ITEMS = 300
# Slow enough that the batch takes a few seconds on the module's worker, so it makes progress
# events, and its items end two or three at a time.
LATENCY = "[[sim:latency=60]]"
# The stream's own pace (webapp.sse.PULSES_PER_SECOND).
EVENTS_PER_SECOND = 2


def submit(api, items: int) -> dict:
    params = {key: value for key, value in example_input("classify").items() if key != "text"}
    body = {
        "kind": "classify",
        "params": params,
        "items": [{"input": {"text": unique(f"Ticket {n}. {LATENCY}")}} for n in range(items)],
    }
    answer = api.request("POST", "/batches", body)
    assert answer.status == 201, answer.body
    return answer.body


def follow(server, token: str, batch_id: str) -> list[tuple[float, Event]]:
    """Every event of the batch's stream to its end, with when it came."""
    events = EventStream(
        f"{server.url}/api/v1/batches/{batch_id}/events",
        {"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert events.status == 200
    found = []
    while (item := events.next()) is not None:
        if isinstance(item, Event):
            found.append((time.monotonic(), item))
    return found


def finished(counts: dict[str, int]) -> int:
    return sum(counts[status] for status in FINISHED)


def test_a_listener_sees_progress_then_done_with_the_counts_of_get(asgi_api, web_server, worker):
    batch = submit(asgi_api, ITEMS)

    timed = follow(web_server, asgi_api.token, batch["id"])

    events = [event for _, event in timed]
    final = asgi_api.request("GET", f"/batches/{batch['id']}").body
    assert final["status"] == "finished"
    assert final["counts"]["succeeded"] == ITEMS
    assert events[-1] == Event("done", final, events[-1].id)
    assert events[-2] == Event("status", final, events[-2].id)

    progress = [event.data for event in events if event.event == "progress"]
    assert len(progress) >= 2, "the items' progress came in several events before the end"
    done_so_far = [finished(data["counts"]) for data in progress]
    assert done_so_far == sorted(done_so_far)
    assert done_so_far[-1] <= ITEMS
    ids = [entry_id(event) for event in events[1:]]
    assert ids == sorted(ids)

    # Hundreds of items, each pulsing at its claim and at its end: the listener got a few
    # events a second, not one per change.
    statuses = [event for event in events if event.event in ("status", "done")]
    span = timed[-1][0] - timed[0][0]
    assert len(progress) <= EVENTS_PER_SECOND * span + 2
    assert len(events) < ITEMS / 4
    assert len(statuses) <= 4, "the first look, running, finished, done"
