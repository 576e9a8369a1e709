"""A job's events in one Redis Stream: its status changes, the output as it is written, done.

The stream `{AIJOBS_REDIS_PREFIX}:job-events:{job_id}` is the replay buffer a late
listener reads from the start: trimmed to about MAX_EVENTS entries and expiring
EXPIRE_SECONDS after its last event. Entry ids ("1733..-0") increase per job, so
a listener resumes after the last id it saw.

Events (each entry holds `event` and `data`, the data as JSON):
- `status` `{"status": ...}` after each state change has committed;
- `output` `{"text": <text added since the last output event>, "partial": <the
  output parsed from all of the call's text so far, or null>, "attempt", "seq"}`,
  at most OUTPUT_EVENTS_PER_SECOND a second (the worker coalesces deltas);
- `done` `{"status": ...}` right after the final status event.

Pulses: a page or client following many jobs at once (a batch's items, a user's jobs) does not
read every job's stream. Each state change also adds an empty entry to a topic's pulse stream
(`{prefix}:pulse:batch:{batch_id}`, `{prefix}:pulse:owner:{owner_id}`), trimmed to its last
entry: a listener blocks on the one key, and on waking reads the state it shows once, however
many changes the pulse stands for. Its entry ids increase, so they serve as event ids too.

A cancel also sets `{prefix}:job-cancel:{job_id}`, which a streaming worker reads
with each output event it publishes (the same round trip), so it stops paying for
output nobody will use without holding a database connection through the stream.

Publishing from a state change never fails it: the change has committed, and a
listener that missed an event still finds the job's state in the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Iterable
from functools import partial
from typing import Any
from uuid import UUID

import redis
import redis.asyncio
from django.conf import settings
from django.db import transaction

from jobs.models import FINISHED, Status
from jobs.ratelimit import get_redis

log = logging.getLogger(__name__)

# The replay buffer: enough for every output event of a long answer (ten a second for
# a minute and a half) and its status events. Trimmed approximately, which Redis does
# cheaply by whole nodes.
MAX_EVENTS = 1000
EXPIRE_SECONDS = 3600
OUTPUT_EVENTS_PER_SECOND = 10
# Event streams and long polls one web process may hold, each with a Redis connection.
MAX_LISTENERS = 10_000

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def events_key(job_id: UUID | str) -> str:
    return f"{settings.AIJOBS_REDIS_PREFIX}:job-events:{job_id}"


def cancel_key(job_id: UUID | str) -> str:
    return f"{settings.AIJOBS_REDIS_PREFIX}:job-cancel:{job_id}"


def _add(pipe: redis.client.Pipeline, job_id: UUID | str, event: str, data: dict[str, Any]) -> None:
    key = events_key(job_id)
    fields = {"event": event, "data": json.dumps(data, separators=(",", ":"))}
    pipe.xadd(key, fields, maxlen=MAX_EVENTS, approximate=True)
    pipe.expire(key, EXPIRE_SECONDS)


def job_event_publish(job_id: UUID | str, event: str, data: dict[str, Any]) -> str:
    """Append one event to the job's stream (one round trip); its entry id."""
    pipe = get_redis().pipeline(transaction=False)
    _add(pipe, job_id, event, data)
    entry_id = pipe.execute()[0]
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def job_status_publish(job_id: UUID | str, status: str, *, topics: Iterable[str] = ()) -> None:
    """Publish the job's new status once the change that made it has committed.

    Outside a transaction that is now; inside one, at its commit (never, if it
    rolls back). A final status is followed by `done`, a cancel sets the key
    the job's worker checks, and `topics` are pulsed; all of it in one round trip.
    """
    transaction.on_commit(partial(_publish_status, str(job_id), str(status), tuple(topics)))


def _publish_status(job_id: str, status: str, topics: tuple[str, ...]) -> None:
    pipe = get_redis().pipeline(transaction=False)
    _add(pipe, job_id, "status", {"status": status})
    _add_pulses(pipe, topics)
    if status in FINISHED:
        _add(pipe, job_id, "done", {"status": status})
    if status == Status.CANCELED:
        # No worker holds the job longer than a lease, so the key need not outlive one.
        pipe.set(cancel_key(job_id), 1, ex=settings.AIJOBS_LEASE_SECONDS)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("job %s: status %s not published (%s)", job_id, status, exc)


def owner_topic(owner_id: int) -> str:
    return f"owner:{owner_id}"


def batch_topic(batch_id: UUID | str) -> str:
    return f"batch:{batch_id}"


def job_topics(*, owner_id: int, batch_id: UUID | str | None) -> list[str]:
    """What a job's state change moves: its owner's lists, and its batch if it has one."""
    topics = [owner_topic(owner_id)]
    if batch_id is not None:
        topics.append(batch_topic(batch_id))
    return topics


def pulse_key(topic: str) -> str:
    return f"{settings.AIJOBS_REDIS_PREFIX}:pulse:{topic}"


def _add_pulses(pipe: redis.client.Pipeline, topics: Iterable[str]) -> None:
    for topic in topics:
        # Only the newest entry matters (its id says "something changed after this"), so
        # the stream keeps one: a listener reads at most one entry however busy the topic.
        pipe.xadd(pulse_key(topic), {"p": 1}, maxlen=1, approximate=False)
        pipe.expire(pulse_key(topic), EXPIRE_SECONDS)


def topics_pulse(topics: Iterable[str]) -> None:
    """Pulse `topics` once the current transaction commits (now outside one), in one round trip.

    Like a status event, a lost pulse never fails the change that made it.
    """
    transaction.on_commit(partial(_pulse, tuple(topics)))


def _pulse(topics: tuple[str, ...]) -> None:
    pipe = get_redis().pipeline(transaction=False)
    _add_pulses(pipe, topics)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("pulse of %s not sent (%s)", ", ".join(topics), exc)


async def pulse_last(topic: str) -> str | None:
    """The id of the topic's newest pulse, or None when it has none (yet, or any more)."""
    newest = await _async_redis().xrevrange(pulse_key(topic), count=1)
    return newest[0][0] if newest else None


async def pulse_wait(topic: str, after: str | None, block_ms: int) -> str | None:
    """The id of the topic's newest pulse once it is newer than `after` (any, for None),
    waiting up to `block_ms` for one; None when none came."""
    answer = await _async_redis().xread({pulse_key(topic): after or "0-0"}, block=max(1, block_ms))
    if not answer:
        return None
    [(_key, entries)] = answer
    return entries[-1][0]


def job_output_publish(job_id: UUID | str, data: dict[str, Any]) -> bool:
    """Publish an output event; True when the job has been canceled (one round trip).

    Raises redis.RedisError: the caller decides what a lost event costs it.
    """
    return job_outputs_publish([(job_id, data)])[0]


def job_outputs_publish(outputs: list[tuple[UUID | str, dict[str, Any]]]) -> list[bool]:
    """Publish output events of any jobs in one round trip; for each, whether its job has
    been canceled. Raises redis.RedisError, as job_output_publish."""
    pipe = get_redis().pipeline(transaction=False)
    for job_id, data in outputs:
        _add(pipe, job_id, "output", data)
        pipe.exists(cancel_key(job_id))
    # Each event is XADD, EXPIRE, EXISTS: every third reply answers the cancel question.
    return [bool(exists) for exists in pipe.execute()[2::3]]


async def job_events_read(
    job_id: UUID | str, after: str | None, block_ms: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """The job's events after entry id `after` (all of them for None), as (id, event, data).

    When there are none yet, waits up to `block_ms` for the first (not at all for 0).
    """
    block = block_ms if block_ms > 0 else None
    answer = await _async_redis().xread({events_key(job_id): after or "0-0"}, block=block)
    if not answer:
        return []
    [(_key, entries)] = answer
    return [(entry_id, fields["event"], json.loads(fields["data"])) for entry_id, fields in entries]


def _async_redis() -> redis.asyncio.Redis:
    """One client per event loop: an asyncio connection belongs to the loop that opened it."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking XREAD holds its connection, idle, for up to block_ms: no read timeout
        # (redis-py's default of 5 s would break every wait longer than that), and room for
        # every listener of a web process (its default pool stops at 100 connections).
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=None,
            max_connections=MAX_LISTENERS,
        )
    return client
