"""Bar charts drawn server-side: geometry here, SVG in templates/usage/_bar_chart.html.

Bars live in a 0..100 high SVG viewBox stretched to its box (so the chart fills any width);
axis labels are HTML laid out by CSS (evenly spaced ticks, one x slot per bar), so text never
stretches with it and no inline style (which the Content-Security-Policy forbids) places it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

SLOT_WIDTH = 10  # viewBox units per bar slot
BAR_WIDTH = 6.4  # the rest of the slot is the gap between bars
MAX_X_LABELS = 5  # more day labels than this overlap on a phone


@dataclass(frozen=True)
class Series:
    key: str  # the row field it draws
    label: str
    color: str  # a CSS class suffix: chart-fill-<color>


@dataclass(frozen=True)
class Segment:
    color: str
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    slot_x: float  # where its slot starts: the whole slot shows the tooltip on hover
    x: float  # where the drawn bar starts
    label: str
    show_label: bool
    title: str
    segments: list[Segment]


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    ticks: list[str]  # the y axis labels, from 0 up to the top, evenly spaced
    series: list[Series]
    width: float
    empty: bool
    slot_width: float = SLOT_WIDTH
    bar_width: float = BAR_WIDTH


def bar_chart(
    rows: Sequence[dict[str, Any]],
    series: Sequence[Series],
    *,
    label: Callable[[dict[str, Any]], str],
    title: Callable[[dict[str, Any]], str],
    tick_label: Callable[[float, float], str],
    min_step: float = 0,
) -> Chart:
    """One stacked bar per row, with `series` stacked bottom up and a rounded y axis.

    `tick_label(value, step)` formats an axis value (the step tells how precise to be);
    `min_step` keeps whole quantities (tokens) off fractional ticks.
    """
    totals = [sum(float(row[s.key]) for s in series) for row in rows]
    step, top = axis(max(totals, default=0), min_step=min_step)
    every = max(1, math.ceil(len(rows) / MAX_X_LABELS))
    bars = [
        Bar(
            slot_x=index * SLOT_WIDTH,
            x=round(index * SLOT_WIDTH + (SLOT_WIDTH - BAR_WIDTH) / 2, 2),
            label=label(row),
            # Counted from the right, so the newest bar is always labelled.
            show_label=(len(rows) - 1 - index) % every == 0,
            title=title(row),
            segments=_stack(row, series, top),
        )
        for index, row in enumerate(rows)
    ]
    ticks = [tick_label(step * n, step) for n in range(round(top / step) + 1)]
    return Chart(
        bars=bars,
        ticks=ticks,
        series=list(series),
        width=len(rows) * SLOT_WIDTH,
        empty=not any(totals),
    )


def _stack(row: dict[str, Any], series: Sequence[Series], top: float) -> list[Segment]:
    segments, base = [], 0.0
    for s in series:
        height = float(row[s.key]) / top * 100
        if height > 0:
            # SVG's y axis points down: a segment's top edge is 100 minus its top.
            segments.append(Segment(s.color, round(100 - base - height, 3), round(height, 3)))
        base += height
    return segments


def axis(largest: float, *, min_step: float = 0) -> tuple[float, float]:
    """A round tick step (1, 2 or 5 times a power of ten) and the axis top, at most 4 steps up."""
    if largest <= 0:
        return max(min_step, 1.0), max(min_step, 1.0) * 4
    rough = largest / 4
    power = 10 ** math.floor(math.log10(rough))
    step = max(min_step, next(m * power for m in (1, 2, 5, 10) if m * power >= rough))
    # The epsilon keeps float noise (3.0000000001 steps) from adding an empty step on top.
    return step, step * math.ceil(largest / step - 1e-9)
