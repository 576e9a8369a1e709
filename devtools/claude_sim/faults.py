"""Fault directives: which outcome a request gets, counted per job text."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

DIRECTIVE_RE = re.compile(r"\[\[sim:([a-z0-9-]+)(?:\*(\d+)|=(\d+))?\]\]")
MIDSTREAM_ERROR = "midstream-error"
COUNTED_FAULTS = ("429", "529", "500", "timeout", "invalid", MIDSTREAM_ERROR)
RANDOM_FAULTS = ("429", "529", "500")


def strip_directives(text: str) -> str:
    return DIRECTIVE_RE.sub("", text)


def digest(text: str) -> bytes:
    # Counters and the cache keep digests, not prompts, so memory stays small.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Directives:
    """The fault directives of one request, in the order they appear."""

    counted: tuple[tuple[str, int], ...] = ()
    permanent: str | None = None
    latency_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> Directives:
        counted: list[tuple[str, int]] = []
        permanent: str | None = None
        latency: int | None = None
        seen: set[str] = set()
        for match in DIRECTIVE_RE.finditer(text):
            if match.group(0) in seen:
                continue
            seen.add(match.group(0))
            kind, times, value = match.groups()
            # A stream broken once is the common case, and its retry must get through.
            if kind in COUNTED_FAULTS and (times or kind == MIDSTREAM_ERROR):
                counted.append((kind, int(times or 1)))
            elif kind in ("400", "401") and permanent is None:
                permanent = kind
            elif kind == "latency" and value and latency is None:
                latency = int(value)
        return cls(tuple(counted), permanent, latency)

    def outcome_for(self, number: int) -> str:
        """The outcome of the `number`-th request (1-based) of a job text."""
        upper = 0
        for kind, times in self.counted:
            upper += times
            if number <= upper:
                return kind
        return "ok"


class Faults:
    """Numbers the requests of each job text and picks their outcomes, random faults included."""

    def __init__(self, fault_rate: float, seed: int | None) -> None:
        self._fault_rate = fault_rate
        self._rng = random.Random(seed)
        self._counters: dict[bytes, int] = {}

    def reset(self) -> None:
        self._counters.clear()

    def outcome(self, directives: Directives, first_text: str) -> str:
        """The directives' verdict for this request, or a random fault instead of a 200."""
        if directives.permanent:
            return directives.permanent
        outcome = "ok"
        if directives.counted:
            key = digest(first_text)
            self._counters[key] = number = self._counters.get(key, 0) + 1
            outcome = directives.outcome_for(number)
        faulty = self._fault_rate > 0 and self._rng.random() < self._fault_rate
        if outcome in ("ok", "invalid") and faulty:
            return self._rng.choice(RANDOM_FAULTS)
        return outcome
