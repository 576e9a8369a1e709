"""Form fields derived from a kind's Input model, so a new kind gets its form without new code.

Each Input field but `text` (which every kind shares) becomes one Django field, chosen by its
type: a choice of literals as radio buttons, a bool as a checkbox, a number as a number input, a
list as a textarea of one item per line, a dict as a JSON textarea, a string as a text box. The
kind's FIELD_HINTS add labels, help and error wording for people. The fields only turn strings
into JSON types: the kind's Input validates, inside jobs.submission, for the web and the API.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Le
from django import forms
from pydantic.fields import FieldInfo

from jobs.kinds.common import FieldHint

SHARED_FIELDS = ("text",)
# A string field allowing more than this many characters gets a textarea, not a line.
LINE_MAX_CHARS = 200


class LinesField(forms.CharField):
    """A textarea of one item per line: blank lines and surrounding spaces are dropped."""

    widget = forms.Textarea

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        lines = (line.strip() for line in super().to_python(value).splitlines())
        return [line for line in lines if line]

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value


class JsonField(forms.CharField):
    """A textarea of JSON, parsed; blank is None (so the kind says whether it is required)."""

    widget = forms.Textarea

    def to_python(self, value: Any) -> Any:
        raw = super().to_python(value)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value, indent=2)


def input_fields(kind: Any) -> Iterator[tuple[str, FieldInfo]]:
    """The kind's own Input fields as (the key in a job's input, the field), in model order."""
    for name, info in kind.Input.model_fields.items():
        key = info.alias or name
        if key not in SHARED_FIELDS:
            yield key, info


def form_field(kind: Any, key: str, info: FieldInfo) -> forms.Field:
    """The Django field that edits one Input field of `kind`."""
    hint = getattr(kind, "FIELD_HINTS", {}).get(key, FieldHint())
    options: dict[str, Any] = {
        "required": False,
        "label": hint.label or key.replace("_", " ").capitalize(),
        "help_text": hint.help if hint.help is not None else (info.description or ""),
    }
    default = info.get_default()
    if default is not None and not info.is_required():
        options["initial"] = default
    annotation = _without_none(info.annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        choices = [(value, str(value).replace("_", " ").capitalize()) for value in values]
        return forms.ChoiceField(choices=choices, widget=forms.RadioSelect, **options)
    if annotation is bool:
        return forms.BooleanField(**options)
    if annotation in (int, float):
        bounds = _bounds(info)
        field_class = forms.IntegerField if annotation is int else forms.FloatField
        return field_class(widget=forms.NumberInput(attrs=bounds), **options)
    attrs = {"placeholder": hint.placeholder} if hint.placeholder else {}
    if origin is list:
        attrs |= {"rows": hint.rows or 5, "data-lines": ""}
        return LinesField(strip=False, widget=forms.Textarea(attrs=attrs), **options)
    if origin is dict or annotation is dict:
        attrs |= {"rows": hint.rows or 12, "spellcheck": "false", "class": "mono", "data-json": ""}
        return JsonField(strip=False, widget=forms.Textarea(attrs=attrs), **options)
    if _max_length(info) <= LINE_MAX_CHARS:
        return forms.CharField(widget=forms.TextInput(attrs=attrs), **options)
    attrs["rows"] = hint.rows or 4
    return forms.CharField(widget=forms.Textarea(attrs=attrs), **options)


def friendly_message(kind: Any, key: str, error_type: str) -> str | None:
    """The kind's own wording for an error of this type on this field, if it has one."""
    hint = getattr(kind, "FIELD_HINTS", {}).get(key)
    return hint.messages.get(error_type) if hint else None


def _without_none(annotation: Any) -> Any:
    """`X` for `X | None`: an optional field is edited like a required one and may stay blank."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, Ge):
            bounds["min"] = item.ge
        elif isinstance(item, Le):
            bounds["max"] = item.le
    return bounds


def _max_length(info: FieldInfo) -> float:
    lengths = [getattr(item, "max_length", None) for item in info.metadata]
    return min((length for length in lengths if length is not None), default=float("inf"))
