"""Dispatcher rounds after batch items finish, run by one thread of each worker process.

A round for every finished item, in the thread that ran it, cost that thread a
transaction, two statements over the batches' indexes and a publish, for the one item
of room it made: at zero simulated latency a fifth of the worker's CPU went to rounds
(PERFORMANCE.md, g). So an item only notes here that its batch has room, and this
process's thread runs one round for every item noted since its last, at most one round
each ROUND_GAP_SECONDS; an idle thread's round starts at once. The window has room for
the wait: the few items a gap lets finish leave their room unfilled a little longer.

A worker killed with items noted and no round run yet loses nothing: beat's round does the
same work within AIJOBS_BATCH_DISPATCH_INTERVAL.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from uuid import UUID

from django.db import connection

from jobs import dispatch

log = logging.getLogger(__name__)

ROUND_GAP_SECONDS = 0.05

RunRound = Callable[[Collection[UUID]], None]


class Rounds:
    """The round thread of a process, started with the first item noted."""

    def __init__(
        self,
        run_round: RunRound = dispatch.batch_items_finished,
        gap: float = ROUND_GAP_SECONDS,
    ) -> None:
        self._run_round = run_round
        self._gap = gap
        self._noted = threading.Condition()
        self._batch_ids: set[UUID] = set()
        self._thread: threading.Thread | None = None
        self._last_round = -math.inf

    def item_finished(self, batch_id: UUID) -> None:
        """An item of the batch is done with: have the next round give its window the room."""
        with self._noted:
            self._batch_ids.add(batch_id)
            if self._thread is None:
                # Started here, not at import: a prefork pool's children each need their own.
                self._thread = threading.Thread(target=self._loop, name="batch-rounds", daemon=True)
                self._thread.start()
            self._noted.notify()

    def run_noted(self) -> None:
        """One round for the batches noted since the last; the connection goes back after."""
        with self._noted:
            batch_ids, self._batch_ids = self._batch_ids, set()
        if not batch_ids:
            return
        try:
            self._run_round(batch_ids)
        finally:
            # The thread lives as long as the process: it must not keep a pooled connection.
            connection.close()

    def _loop(self) -> None:
        while True:
            with self._noted:
                self._noted.wait_for(lambda: bool(self._batch_ids))
            # Items that finish during the wait go in the same round.
            time.sleep(max(0.0, self._last_round + self._gap - time.monotonic()))
            self._last_round = time.monotonic()
            try:
                self.run_noted()
            except Exception:
                # A bug must not end the thread, or no round would follow this process's items
                # but beat's. The noted batches were taken: beat's round catches them up.
                log.exception("batch round after finished items failed")


# The worker's: every thread of the process notes its items here.
ROUNDS = Rounds()
