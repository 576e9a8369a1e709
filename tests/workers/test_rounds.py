"""A worker process's round thread: one dispatcher round for every item finished since the last."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection
from uuid import UUID

from workers.rounds import Rounds

TIMEOUT = 10


class Runs:
    """A stand-in for dispatch.batch_items_finished: records each round, and can hold one."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.rounds: list[set[UUID]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Semaphore(0)
        self._fail_first = fail_first

    def __call__(self, batch_ids: Collection[UUID]) -> None:
        self.started.set()
        assert self.release.wait(TIMEOUT), "the round was never let go"
        self.rounds.append(set(batch_ids))
        self.done.release()
        if self._fail_first and len(self.rounds) == 1:
            raise RuntimeError("a bug in a round")

    def wait_rounds(self, count: int) -> list[set[UUID]]:
        for _ in range(count):
            assert self.done.acquire(timeout=TIMEOUT), f"round {len(self.rounds) + 1} never ran"
        return self.rounds


def test_an_idle_thread_runs_the_round_of_an_item_at_once():
    runs = Runs()
    runs.release.set()
    batch = uuid.uuid4()

    Rounds(runs, gap=3600).item_finished(batch)

    assert runs.wait_rounds(1) == [{batch}], "the first round waits for no gap"


def test_items_finished_during_a_round_share_the_next_one():
    runs = Runs()
    rounds = Rounds(runs, gap=0)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    rounds.item_finished(first)
    assert runs.started.wait(TIMEOUT)
    for batch in (second, third, second):
        rounds.item_finished(batch)
    runs.release.set()

    assert runs.wait_rounds(2) == [{first}, {second, third}]
    assert not runs.done.acquire(timeout=0.2), "no round without an item finished"


def test_a_round_that_fails_leaves_the_thread_running_the_next():
    runs = Runs(fail_first=True)
    runs.release.set()
    rounds = Rounds(runs, gap=0)
    first, second = uuid.uuid4(), uuid.uuid4()

    rounds.item_finished(first)
    runs.wait_rounds(1)
    rounds.item_finished(second)

    assert runs.wait_rounds(1) == [{first}, {second}]


def test_nothing_noted_runs_no_round():
    runs = Runs()
    runs.release.set()

    Rounds(runs).run_noted()

    assert runs.rounds == []
