"""Usage: tokens and cost per day and per kind over the last N days, with totals."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.views.decorators.http import require_GET

from jobs import kinds, selectors
from jobs.usage import TOKEN_FIELDS
from webapp.forms import UsageRangeForm
from webapp.templatetags.aijobs import compact, count, total_tokens, usd
from webapp.views.charts import Chart, Series, bar_chart

TOKEN_SERIES = (
    Series("input_tokens", "Input", "input"),
    Series("output_tokens", "Output", "output"),
    Series("cache_creation_input_tokens", "Cache write", "cache-write"),
    Series("cache_read_input_tokens", "Cache read", "cache-read"),
)
COST_SERIES = (Series("cost_usd", "Cost in USD", "cost"),)
ZERO_USAGE: dict[str, Any] = {"calls": 0, **dict.fromkeys(TOKEN_FIELDS, 0)}


@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    form = UsageRangeForm(request.GET)
    days = form.chosen_days()
    end = timezone.now().date()
    start = end - timedelta(days=days - 1)
    report = {
        group: selectors.usage_totals(owner=request.user, start=start, end=end, group_by=group)
        for group in ("day", "kind")
    }
    daily = _every_day(report["day"]["groups"], start, end)
    context = {
        "days": days,
        "ranges": UsageRangeForm.DAYS,
        "start": start,
        "end": end,
        "totals": report["day"]["totals"],
        "cache_hit_percent": _cache_hit_percent(report["day"]["totals"]),
        "token_chart": _token_chart(daily),
        "cost_chart": _cost_chart(daily),
        "kinds": _kind_rows(report["kind"]["groups"]),
        "daily": list(reversed(daily)),
    }
    return render(request, "usage/usage.html", context)


def _every_day(groups: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    """One row per day from start to end; days without calls are zeros, not gaps."""
    by_day = {group["key"]: group for group in groups}
    days = (start + timedelta(days=n) for n in range((end - start).days + 1))
    return [{**ZERO_USAGE, **by_day.get(day.isoformat(), {}), "day": day} for day in days]


def _day_label(row: dict[str, Any]) -> str:
    return f"{row['day']:%b} {row['day'].day}"


def _token_chart(daily: list[dict[str, Any]]) -> Chart:
    def title(row: dict[str, Any]) -> str:
        parts = " · ".join(f"{s.label} {count(row[s.key])}" for s in TOKEN_SERIES)
        return f"{_day_label(row)}: {_counted(total_tokens(row), 'token')} ({parts})"

    return bar_chart(
        daily,
        TOKEN_SERIES,
        label=_day_label,
        title=title,
        tick_label=lambda value, step: compact(value),
        min_step=1,
    )


def _cost_chart(daily: list[dict[str, Any]]) -> Chart:
    def title(row: dict[str, Any]) -> str:
        return f"{_day_label(row)}: {usd(row['cost_usd'])} in {_counted(row['calls'], 'call')}"

    return bar_chart(daily, COST_SERIES, label=_day_label, title=title, tick_label=_cost_tick)


def _counted(number: int, noun: str) -> str:
    """`1 call`, `2 calls`, `1,204 tokens`: the number and the noun agreeing with it."""
    return f"{count(number)} {noun}{pluralize(number)}"


def _cost_tick(value: float, step: float) -> str:
    """Dollars with as many decimals as the step needs: $0.005, $0.010, ..."""
    decimals = max(0, -math.floor(math.log10(step)))
    return f"${value:,.{decimals}f}"


def _kind_rows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every kind, with its share of the busiest kind's tokens and cost for the bars."""
    by_kind = {group["key"]: group for group in groups}
    rows = [{**ZERO_USAGE, **by_kind.get(kind, {}), "kind": kind} for kind in kinds.names()]
    for row in rows:
        row["tokens"] = total_tokens(row)
    most_tokens = max(row["tokens"] for row in rows) or 1
    most_cost = max(row["cost_usd"] for row in rows) or 1
    for row in rows:
        row["token_percent"] = round(row["tokens"] / most_tokens * 100, 1)
        row["cost_percent"] = round(float(row["cost_usd"] / most_cost) * 100, 1)
    return rows


def _cache_hit_percent(totals: dict[str, Any]) -> float | None:
    """The share of prompt tokens read from the cache, or None before any call."""
    prompt = (
        totals["input_tokens"]
        + totals["cache_creation_input_tokens"]
        + totals["cache_read_input_tokens"]
    )
    return round(totals["cache_read_input_tokens"] / prompt * 100, 1) if prompt else None
