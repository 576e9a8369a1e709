"""One call's output published as the model writes it: coalesced, with what parses so far.

Deltas come far more often than anyone reads them (a few words each), and each
event is a Redis write and a message to every listener, so they are gathered
into at most OUTPUT_EVENTS_PER_SECOND events. Each event asks Redis, in the same
round trip, whether the job was canceled meanwhile; that is how a streaming
worker learns of a cancel without a database connection held through the call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pydantic_core
import redis

from jobs import events

log = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 1 / events.OUTPUT_EVENTS_PER_SECOND

Publish = Callable[[UUID | str, dict[str, Any]], bool]


def partial_output(text: str) -> Any:
    """The JSON value written so far, strings still being written included; None until the
    text parses as the start of one (an empty text, or prose)."""
    try:
        # "trailing-strings": a summary appears as it is written, not once its string closes.
        return pydantic_core.from_json(text, allow_partial="trailing-strings")
    except ValueError:
        return None


class OutputStream:
    """The output events of one call (`attempt`, `seq`) of a job."""

    def __init__(
        self,
        job_id: UUID | str,
        *,
        attempt: int,
        seq: int,
        clock: Callable[[], float] = time.monotonic,
        publish: Publish = events.job_output_publish,
    ) -> None:
        self._job_id = job_id
        self._call = {"attempt": attempt, "seq": seq}
        self._clock = clock
        self._publish = publish
        self._text = ""
        self._unsent = ""
        self._sent_at = -math.inf
        self._lost = False
        self.canceled = False

    def write(self, delta: str) -> bool:
        """Take a piece of text; False once the job is known to be canceled (stop reading)."""
        self._unsent += delta
        if self._clock() - self._sent_at >= MIN_INTERVAL_SECONDS:
            self.flush()
        return not self.canceled

    def flush(self) -> None:
        """Publish the text not sent yet, unless there is none or nobody wants it any more."""
        if not self._unsent or self.canceled or self._lost:
            return
        self._text += self._unsent
        data = {"text": self._unsent, "partial": partial_output(self._text), **self._call}
        self._unsent = ""
        self._sent_at = self._clock()
        try:
            self.canceled = self._publish(self._job_id, data)
        except redis.RedisError as exc:
            # The answer matters more than its events: stop publishing for this call rather
            # than wait on an unreachable Redis at every event (the result is still recorded).
            log.warning("job %s: output events stopped for this call (%s)", self._job_id, exc)
            self._lost = True
