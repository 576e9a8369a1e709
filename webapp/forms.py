"""HTML forms: they turn what a browser posts into what the services take.

A job's values are checked once, by its kind's Input model inside jobs.submission, for the web
and the API alike. JobForm only turns strings into JSON types (a number, a list of labels, a
parsed schema) and puts the service's field errors back next to the fields they name.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, get_args

from django import forms
from django.conf import settings

from jobs.kinds import KIND_NAMES, classify, extract, summarize
from jobs.models import Status

# The form fields each kind reads; the rest of the form belongs to the other kinds.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    summarize.NAME: ("text", "max_words", "style"),
    classify.NAME: ("text", "labels", "multi_label", "instructions"),
    extract.NAME: ("text", "schema"),
}
KIND_BLURBS: dict[str, str] = {
    summarize.NAME: "A summary and its key points, within a word budget.",
    classify.NAME: "Pick the labels from your list that fit the text.",
    extract.NAME: "Structured data shaped by a JSON Schema you give.",
}
# Pydantic's wording for these reads like a programmer's; the rest of its messages read well.
REQUIRED = "This field is required."
FRIENDLY_MESSAGES: dict[tuple[str, str], str] = {
    ("labels", "too_short"): f"Give at least {classify.MIN_LABELS} labels, one per line.",
    ("labels", "too_long"): f"Give at most {classify.MAX_LABELS} labels.",
}

SCHEMA_EXAMPLES: list[dict[str, Any]] = [
    {
        "id": "contact",
        "name": "Contact details",
        "text": (
            "Hi, this is Maria Lopez from Northwind Traders. You can reach me at "
            "maria.lopez@northwind.example or on +1 415 555 0136 any weekday."
        ),
        "schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The person's full name"},
                "email": {"type": "string", "description": "Email address"},
                "phone": {"type": "string", "description": "Phone number as written"},
                "company": {"type": "string", "description": "Company or organisation"},
            },
            "required": ["name", "email"],
        },
    },
    {
        "id": "invoice",
        "name": "Invoice",
        "text": (
            "Invoice INV-2041, issued 2026-11-02 by Acme Hosting. 3 x VPS small at 12.00 "
            "and 1 x Backup plan at 4.50. Total due: 40.50 EUR within 30 days."
        ),
        "schema": {
            "type": "object",
            "properties": {
                "invoice_number": {"type": "string"},
                "issue_date": {"type": "string", "description": "As YYYY-MM-DD"},
                "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                "total": {"type": "number"},
                "line_items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "description": {"type": "string"},
                            "quantity": {"type": "integer", "minimum": 1},
                            "unit_price": {"type": "number"},
                        },
                        "required": ["description", "unit_price"],
                    },
                },
            },
            "required": ["invoice_number", "total", "line_items"],
        },
    },
    {
        "id": "event",
        "name": "Event",
        "text": (
            "Join us for PyCon Lisbon on 14 March 2027 at the Congress Centre. Talks by Ana "
            "Costa and Tom Becker; the keynote is also streamed online."
        ),
        "schema": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "date": {"type": "string", "description": "The date as written"},
                "venue": {"type": "string"},
                "streamed_online": {"type": "boolean"},
                "speakers": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            },
            "required": ["title", "date"],
        },
    },
]


class JobForm(forms.Form):
    """One form for every kind: the kind, the text they share, and each kind's own fields."""

    kind = forms.ChoiceField(
        choices=[(name, name.capitalize()) for name in KIND_NAMES],
        initial=summarize.NAME,
        widget=forms.RadioSelect,
    )
    # Generated when the form is rendered and sent as the job's idempotency key, so posting
    # one rendered form twice (a double click, a resent request) replays the first job.
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)
    text = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 9, "placeholder": "Paste the text to process…"}),
    )
    max_words = forms.IntegerField(
        required=False,
        label="Max words",
        initial=summarize.DEFAULT_MAX_WORDS,
        help_text=f"{summarize.MIN_WORDS} to {summarize.MAX_WORDS} words.",
        widget=forms.NumberInput(attrs={"min": summarize.MIN_WORDS, "max": summarize.MAX_WORDS}),
    )
    style = forms.ChoiceField(
        required=False,
        choices=[(style, style.capitalize()) for style in get_args(summarize.Style)],
        initial="paragraph",
        widget=forms.RadioSelect,
    )
    labels = forms.CharField(
        required=False,
        help_text=(
            f"One per line, {classify.MIN_LABELS} to {classify.MAX_LABELS} distinct labels."
        ),
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "billing\nshipping\nother"}),
    )
    multi_label = forms.BooleanField(
        required=False,
        label="Allow several labels",
        help_text="Otherwise exactly one label is chosen.",
    )
    instructions = forms.CharField(
        required=False,
        label="Instructions (optional)",
        help_text="How to choose, e.g. what each label means.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    schema = forms.CharField(
        required=False,
        label="JSON Schema",
        strip=False,
        help_text="An object schema: object, array, string, number, integer, boolean, enum.",
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "mono"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read per form, not at import: the limit is a setting.
        self.fields["text"].help_text = f"Up to {settings.AIJOBS_MAX_INPUT_CHARS:,} characters."

    @classmethod
    def blank(cls, kind: str | None = None) -> JobForm:
        """A fresh form with a new idempotency key, showing `kind` when it is a known one."""
        initial = {"idempotency_key": uuid.uuid4()}
        if kind in KIND_NAMES:
            initial["kind"] = kind
        return cls(initial=initial)

    def clean_labels(self) -> list[str]:
        lines = (line.strip() for line in self.cleaned_data["labels"].splitlines())
        return [line for line in lines if line]

    def clean_schema(self) -> Any:
        raw = self.cleaned_data["schema"]
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from None

    def clean(self) -> dict[str, Any]:
        # The other kinds' fields are hidden on the page and not part of this job: what they
        # hold (say, half an edited schema) must not stop it.
        kind = self.cleaned_data.get("kind")
        if kind in KIND_FIELDS:
            ignored = set(self.fields) - set(KIND_FIELDS[kind]) - {"kind", "idempotency_key"}
            for name in ignored & set(self.errors):
                del self.errors[name]
        return self.cleaned_data

    @property
    def chosen_kind(self) -> str:
        """The kind to show: the posted one when valid, else the initial one."""
        if self.is_bound and self.data.get("kind") in KIND_NAMES:
            return self.data["kind"]
        return self.initial.get("kind", self.fields["kind"].initial)

    def kind_options(self) -> list[dict[str, Any]]:
        """The kind picker's tiles: name, label, blurb, and whether it is the chosen one."""
        chosen = self.chosen_kind
        return [
            {"name": name, "label": label, "blurb": KIND_BLURBS[name], "checked": name == chosen}
            for name, label in self.fields["kind"].choices
        ]

    def job_input(self) -> dict[str, Any]:
        """The chosen kind's input; blank optional fields are left out so its defaults apply."""
        data = self.cleaned_data
        return {
            name: data[name] for name in KIND_FIELDS[data["kind"]] if data[name] not in (None, "")
        }

    def add_service_errors(self, details: list[dict[str, Any]] | None) -> None:
        """Put InvalidInput details (`loc` like ["input", "labels", 2]) next to their fields."""
        for detail in details or [{"loc": [], "msg": "The input is invalid."}]:
            field, message = self._locate(detail)
            self.add_error(field, message)

    def _locate(self, detail: dict[str, Any]) -> tuple[str | None, str]:
        """The field a service error names (None for the form as a whole) and its message."""
        loc = list(detail.get("loc") or [])
        if loc[:1] == ["input"]:
            loc = loc[1:]
        field = loc[0] if loc and loc[0] in self.fields else None
        error_type = detail.get("type", "")
        if error_type == "missing":
            return field, REQUIRED
        if len(loc) == 1:
            return field, FRIENDLY_MESSAGES.get((loc[0], error_type), detail["msg"])
        if field == "labels" and isinstance(loc[1], int):
            return field, f"Label {loc[1] + 1}: {detail['msg']}"
        return field, detail["msg"]

    def renew_idempotency_key(self) -> None:
        """Give the re-rendered form a new key, so its next submit is a new job."""
        self.data = self.data.copy()
        self.data["idempotency_key"] = str(uuid.uuid4())


class JobFilterForm(forms.Form):
    """The jobs list's filters; an unknown value is dropped, so a stale link still shows jobs."""

    status = forms.ChoiceField(required=False, choices=[("", "All statuses"), *Status.choices])
    kind = forms.ChoiceField(
        required=False,
        choices=[("", "All kinds"), *((name, name.capitalize()) for name in KIND_NAMES)],
    )
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    def filters(self) -> dict[str, str | None]:
        """Keyword arguments for selectors.job_list from the valid fields."""
        self.is_valid()
        return {name: self.cleaned_data.get(name) or None for name in ("status", "kind", "cursor")}


class UsageRangeForm(forms.Form):
    DAYS = (7, 14, 30, 90)
    DEFAULT_DAYS = 14

    days = forms.TypedChoiceField(
        required=False, coerce=int, choices=[(days, f"{days} days") for days in DAYS]
    )

    def chosen_days(self) -> int:
        self.is_valid()
        return self.cleaned_data.get("days") or self.DEFAULT_DAYS


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Token name",
        help_text="Where it will be used, e.g. “nightly import script”.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. nightly import script"}),
    )
