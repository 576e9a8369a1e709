"""One call's output published as the model writes it: coalesced, with what parses so far.

Deltas come far more often than anyone reads them (a few words each), and each
event is a Redis write and a message to every listener, so they are gathered
into at most OUTPUT_EVENTS_PER_SECOND events. Each event asks Redis, in the same
round trip, whether the job was canceled meanwhile; that is how a streaming
worker learns of a cancel without a database connection held through the call.

In a worker, a call hands its events to the process's Batcher, which sends what
every call has written in one round trip every BATCH_INTERVAL_SECONDS: a round
trip per event and call made the worker wait on Redis ten times a second per
call, and each wait (a GIL handoff among dozens of threads) cost about as much
CPU as the rest of the streaming did. A call's first event goes out at once, so
its first words show without delay, and so does its last, after whatever the
batcher still held of it, so that its events come before its final status.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pydantic_core
import redis

from jobs import events

log = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 1 / events.OUTPUT_EVENTS_PER_SECOND
# How long the batcher gathers events before it sends them: short against the events'
# interval, so an event is at most this much later than it would be sent on its own.
BATCH_INTERVAL_SECONDS = 0.02

Publish = Callable[[UUID | str, dict[str, Any]], bool]
PublishMany = Callable[[list[tuple[UUID | str, dict[str, Any]]]], list[bool]]


def partial_output(text: str) -> Any:
    """The JSON value written so far, strings still being written included; None until the
    text parses as the start of one (an empty text, or prose)."""
    try:
        # "trailing-strings": a summary appears as it is written, not once its string closes.
        return pydantic_core.from_json(text, allow_partial="trailing-strings")
    except ValueError:
        return None


class OutputStream:
    """The output events of one call (`attempt`, `seq`) of a job.

    Without a batcher each event is published as it is due; with one, every event but the
    first and the last is handed to it.
    """

    def __init__(
        self,
        job_id: UUID | str,
        *,
        attempt: int,
        seq: int,
        clock: Callable[[], float] = time.monotonic,
        publish: Publish = events.job_output_publish,
        batcher: Batcher | None = None,
    ) -> None:
        self.job_id = job_id
        self._call = {"attempt": attempt, "seq": seq}
        self._clock = clock
        self._publish = publish
        self._batcher = batcher
        self._text = ""
        self._unsent = ""
        self._sent_at = -math.inf
        self._lost = False
        self.canceled = False

    def write(self, delta: str) -> bool:
        """Take a piece of text; False once the job is known to be canceled (stop reading)."""
        self._unsent += delta
        if self._clock() - self._sent_at >= MIN_INTERVAL_SECONDS:
            if self._batcher is None or self._sent_at == -math.inf:
                self.flush()
            elif (data := self._take("")) is not None:
                self._batcher.hold(self, data)
        return not self.canceled

    def flush(self) -> None:
        """Publish the text not sent yet, now, with what the batcher still held of it."""
        held = self._batcher.withdraw(self) if self._batcher is not None else ""
        data = self._take(held)
        if data is None:
            return
        try:
            self.canceled = self._publish(self.job_id, data)
        except redis.RedisError as exc:
            self.lost(exc)

    def lost(self, exc: redis.RedisError) -> None:
        """Redis refused an event: the answer matters more than its events, so stop publishing
        for this call rather than wait on an unreachable Redis at every event (the result is
        still recorded)."""
        log.warning("job %s: output events stopped for this call (%s)", self.job_id, exc)
        self._lost = True

    def _take(self, held: str) -> dict[str, Any] | None:
        """The next event, of `held` (text taken before but not sent) and the text since; None
        when there is none to send or nobody wants it any more."""
        if not (held or self._unsent) or self.canceled or self._lost:
            return None
        self._text += self._unsent
        data = {"text": held + self._unsent, "partial": partial_output(self._text), **self._call}
        self._unsent = ""
        self._sent_at = self._clock()
        return data


class Batcher:
    """Sends the events its streams hold in one round trip every BATCH_INTERVAL_SECONDS,
    from a thread of its own started with the first; each stream learns of its job's cancel
    from the reply."""

    def __init__(
        self,
        publish_many: PublishMany = events.job_outputs_publish,
        interval: float = BATCH_INTERVAL_SECONDS,
    ) -> None:
        self._publish_many = publish_many
        self._interval = interval
        self._changed = threading.Condition()
        self._held: dict[OutputStream, dict[str, Any]] = {}
        self._sending: set[OutputStream] = set()
        self._thread: threading.Thread | None = None

    def hold(self, stream: OutputStream, data: dict[str, Any]) -> None:
        """Keep an event for the next send; one the stream's earlier event joins, if unsent."""
        with self._changed:
            earlier = self._held.get(stream)
            if earlier is not None:
                data = {**data, "text": earlier["text"] + data["text"]}
            self._held[stream] = data
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="output-events", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def withdraw(self, stream: OutputStream) -> str:
        """The text of the stream's held event, taken back for the stream to send itself; first
        waits while an event of the stream is being sent, so its events stay in order."""
        with self._changed:
            while stream in self._sending:
                self._changed.wait()
            data = self._held.pop(stream, None)
        return data["text"] if data is not None else ""

    def send_held(self) -> None:
        """Send every held event in one round trip."""
        with self._changed:
            batch = list(self._held.items())
            self._held.clear()
            self._sending = {stream for stream, _ in batch}
        try:
            if batch:
                answers = self._publish_many([(stream.job_id, data) for stream, data in batch])
                for (stream, _), canceled in zip(batch, answers, strict=True):
                    stream.canceled = stream.canceled or canceled
        except redis.RedisError as exc:
            for stream, _ in batch:
                stream.lost(exc)
        finally:
            with self._changed:
                self._sending = set()
                self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._held))
            # Events that come meanwhile go in the same round trip.
            time.sleep(self._interval)
            try:
                self.send_held()
            except Exception:
                # A bug must not end the thread: every later event of the process would wait
                # for it in vain. That round trip's events are dropped; their calls go on.
                log.exception("output events: a round trip failed")


# The worker's: every streaming call of the process shares it.
BATCHER = Batcher()
