"""Formatting for the pages: ages, money, token counts, JSON, and links that keep the filters.

Every filter that returns markup builds it from escaped pieces (format_html, escape): job
input and model output are untrusted and must never reach the page unescaped.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.template.context import Context
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from jobs import kinds
from jobs.usage import TOKEN_COUNTS

register = template.Library()

MINUTE, HOUR, DAY = 60, 3600, 86400
# Older than this, an age reads better as a date.
AGE_AS_DATE_AFTER = 30 * DAY
# Keys, strings, numbers and literals of indented JSON. Strings match first, so the digits
# and words inside a string are never taken for numbers or literals.
JSON_TOKEN = re.compile(
    r'(?P<key>"(?:[^"\\]|\\.)*"(?=:))'
    r'|(?P<string>"(?:[^"\\]|\\.)*")'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<literal>\btrue\b|\bfalse\b|\bnull\b)"
)


@register.filter
def ago(value: datetime | None) -> str:
    """`3 min ago`, `in 4 s`, or a date when it is long ago."""
    if value is None:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    if 0 <= seconds < 5:
        return "just now"
    if abs(seconds) >= AGE_AS_DATE_AFTER:
        return date_format(timezone.localtime(value), "M j, Y")
    span = _span(abs(seconds))
    return f"{span} ago" if seconds > 0 else f"in {span}"


def _span(seconds: float) -> str:
    if seconds < MINUTE:
        return f"{max(1, int(seconds))} s"
    if seconds < HOUR:
        return f"{int(seconds // MINUTE)} min"
    if seconds < DAY:
        return f"{int(seconds // HOUR)} h"
    return f"{int(seconds // DAY)} d"


@register.filter
def when(value: datetime | None) -> str:
    """A `<time>` showing the age, with the exact UTC time on hover."""
    if value is None:
        return "—"
    exact = date_format(timezone.localtime(value), "Y-m-d H:i:s T")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, ago(value)
    )


@register.filter
def timestamp(value: datetime | None) -> str:
    """The exact time, e.g. `Nov 25, 14:03:22 UTC`."""
    if value is None:
        return "—"
    return date_format(timezone.localtime(value), "M j, H:i:s T")


@register.filter
def elapsed(start: datetime | None, end: datetime | None) -> str:
    """The time from start to end, e.g. `850 ms`, `12.4 s`, `3 min 5 s`."""
    if start is None or end is None:
        return "—"
    return milliseconds(max(0, (end - start).total_seconds() * 1000))


@register.filter
def milliseconds(value: float | int | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{int(value)} ms"
    seconds = value / 1000
    if seconds < MINUTE:
        return f"{seconds:.1f} s"
    return f"{int(seconds // MINUTE)} min {int(seconds % MINUTE)} s"


@register.filter
def usd(value: Decimal | float | str | None) -> str:
    """Dollars with the precision a small amount needs: `$12.30`, `$0.0123`, `$0.000120`."""
    try:
        amount = Decimal(str(value or 0))
    except InvalidOperation:
        return "—"
    if amount == 0:
        return "$0.00"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= Decimal("0.01"):
        return f"${amount:.4f}"
    return f"${amount:.6f}"


@register.filter
def count(value: int | float | None) -> str:
    """A whole number with thousands separators."""
    return f"{int(value or 0):,}"


@register.filter
def compact(value: int | float | None) -> str:
    """A count for tight spaces: `950`, `12.5k`, `3M`."""
    number = float(value or 0)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}".removesuffix(".0") + suffix
    return f"{number:.0f}"


@register.filter
def total_tokens(usage: Any) -> int:
    """The four token counts of a job, call or usage row (an object or a dict) added up."""
    if isinstance(usage, dict):
        return sum(int(usage.get(name) or 0) for name in TOKEN_COUNTS)
    return sum(int(getattr(usage, name, 0) or 0) for name in TOKEN_COUNTS)


@register.filter
def percent(value: Any) -> int:
    """A 0..1 fraction as a whole percentage, clamped: safe in a style attribute."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        return 0
    if fraction != fraction:  # NaN
        return 0
    return round(min(1.0, max(0.0, fraction)) * 100)


@register.filter
def humanize(code: str) -> str:
    """A snake_case code as words: `invalid_output` -> `Invalid output`, `ok` -> `OK`."""
    words = str(code).replace("_", " ")
    return "OK" if words == "ok" else words.capitalize()


@register.filter
def pretty_json(value: Any) -> SafeString:
    """Indented JSON with keys, strings, numbers and literals wrapped in spans for colour."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    pieces, last = [], 0
    for match in JSON_TOKEN.finditer(text):
        pieces.append(escape(text[last : match.start()]))
        pieces.append(format_html('<span class="j-{}">{}</span>', match.lastgroup, match.group()))
        last = match.end()
    pieces.append(escape(text[last:]))
    # Every piece above is escaped, so the joined markup is safe.
    return mark_safe("".join(pieces))


@register.simple_tag(takes_context=True)
def query(context: Context, **changes: Any) -> str:
    """This page's query string with `changes` applied; an empty value removes the key."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    return f"?{params.urlencode()}"


@register.filter
def json_type(value: Any) -> str:
    """The JSON type of a value, as a template chooses how to show it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return "number" if isinstance(value, int | float) else "null"


@register.filter
def all_strings(values: list[Any]) -> bool:
    """Whether a list holds only strings (shown as chips rather than as JSON)."""
    return all(isinstance(value, str) for value in values)


@register.filter
def kind_tone(name: str) -> str:
    """The palette tone of a kind's icon; a kind no longer registered shows in the neutral one."""
    kind = kinds.KINDS.get(name)
    return getattr(kind, "TONE", kinds.TONES[-1])


@register.filter
def kind_label(name: str) -> str:
    return kinds.label(name)


@register.simple_tag
def kind_icons() -> SafeString:
    """The sprite's symbols for every kind: its own ICON, or a generic page."""
    symbols = (
        format_html(
            '<symbol id="i-kind-{}" viewBox="0 0 24 24">{}</symbol>',
            name,
            # A kind's ICON is markup in the kind's own module, never user input.
            mark_safe(getattr(kind, "ICON", kinds.DEFAULT_ICON)),
        )
        for name, kind in kinds.KINDS.items()
    )
    return mark_safe("".join(symbols))  # each symbol is built by format_html above
