"""What a scenario is: how it runs, how it reports; and the helpers its figures use.

A scenario is one module (`a_overhead.py`, ...) that defines `SCENARIO` and is listed in
registry.py. Its `run` measures and returns its runs; `rows`, `headline`, `run_json` and
`cpu_lines` turn those runs into the table, the headline keys and the runs of latest.json.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from devtools.bench.session import Options, Session, Usage


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    sim: str = ""
    runs: str = ""


def no_cpu_lines(runs: list[Any]) -> list[str]:
    return []


@dataclass(frozen=True)
class Scenario:
    """One scenario of the bench.

    key: its runs' key in latest.json. letters: the `--only` letters that run it (b also
    measures e). run: measures, given the session and the profiles dict it may add to.
    headline: its keys of latest.json, each None when it was not run.
    """

    key: str
    letters: tuple[str, ...]
    run: Callable[[Session, dict[str, str]], list[Any]]
    rows: Callable[[Options, list[Any]], list[Row]]
    headline: Callable[[Options, list[Any]], dict[str, Any]]
    run_json: Callable[[Any], dict[str, Any]]
    cpu_lines: Callable[[list[Any]], list[str]] = no_cpu_lines

    def selected(self, only: Sequence[str]) -> bool:
        return any(letter in only for letter in self.letters)


@dataclass
class Results:
    """The runs of each scenario that ran, by key, and what the whole bench left behind."""

    runs: dict[str, list[Any]] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_json(run: Any, **extra: Any) -> dict[str, Any]:
    return {**asdict(run), **extra}


def sim_median(usages: list[Usage]) -> str:
    cpu = median([u.cpu.get("sim", 0.0) for u in usages])
    share = median([u.share("sim") for u in usages])
    return f"{cpu:.2f} s, {share:.0%} of a core"


def sim_note(usage: Usage) -> str:
    return f"{usage.cpu.get('sim', 0.0):.2f} s ({100 * usage.share('sim'):.0f}% of a core)"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
