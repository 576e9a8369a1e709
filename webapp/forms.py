"""HTML forms: they turn what a browser posts into what the services take.

A job's values are checked once, by its kind's Input model inside jobs.submission, for the web
and the API alike. JobForm only turns strings into JSON types (a number, a list of labels, a
parsed schema) and puts the service's field errors back next to the fields they name. Its
fields for each kind are derived from the kind module (webapp.kind_forms).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings

from jobs import kinds
from jobs.models import DeliveryStatus, Status
from webapp import kind_forms

# Pydantic's wording for a missing field reads like a programmer's.
REQUIRED = "This field is required."
DEFAULT_MODEL_CHOICE = ("", "The kind's default")
NO_ID_COLUMN = ("", "None: use line numbers")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class KindGroup:
    """One kind as the form shows it: its tile, its own fields and its ready examples."""

    name: str
    label: str
    blurb: str
    default_model: str
    checked: bool
    fields: list[forms.BoundField]
    examples: list[dict[str, Any]]


def field_name(kind: str, key: str) -> str:
    """The form field for `key` of a kind's input; the shared text is one field for all kinds."""
    return key if key in kind_forms.SHARED_FIELDS else f"{kind}-{key}"


class JobForm(forms.Form):
    """One form for every kind: the kind, the text and model they share, and each kind's fields."""

    kind = forms.ChoiceField(widget=forms.RadioSelect)
    # Generated when the form is rendered and sent as the job's idempotency key, so posting
    # one rendered form twice (a double click, a resent request) replays the first job.
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)
    text = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 9, "placeholder": "Paste the text to process…"}),
    )
    model = forms.ChoiceField(required=False, label="Model")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read per form, not at import: kinds, models and limits are settings.
        self.fields["kind"].choices = [(name, kinds.label(name)) for name in kinds.names()]
        self.fields["kind"].initial = kinds.names()[0]
        self.fields["text"].help_text = f"Up to {settings.AIJOBS_MAX_INPUT_CHARS:,} characters."
        self.fields["model"].choices = [
            DEFAULT_MODEL_CHOICE,
            *((model, model) for model in settings.AIJOBS_MODEL_PRICES),
        ]
        for name, kind in kinds.KINDS.items():
            for key, info in kind_forms.input_fields(kind):
                self.fields[field_name(name, key)] = kind_forms.form_field(kind, key, info)

    @classmethod
    def blank(cls, kind: str | None = None) -> JobForm:
        """A fresh form with a new idempotency key, showing `kind` when it is a known one."""
        initial: dict[str, Any] = {"idempotency_key": uuid.uuid4()}
        if kind in kinds.KINDS:
            initial["kind"] = kind
        return cls(initial=initial)

    def clean(self) -> dict[str, Any]:
        # The other kinds' fields are hidden on the page and not part of this job: what they
        # hold (say, half an edited schema) must not stop it.
        kind = self.cleaned_data.get("kind")
        if kind in kinds.KINDS:
            others = {name for other in kinds.KINDS for name in self._fields_of(other)}
            for name in set(self.errors) & (others - set(self._fields_of(kind))):
                del self.errors[name]
        return self.cleaned_data

    @property
    def chosen_kind(self) -> str:
        """The kind to show: the posted one when valid, else the initial one."""
        if self.is_bound and self.data.get("kind") in kinds.KINDS:
            return self.data["kind"]
        return self.initial.get("kind", self.fields["kind"].initial)

    def kind_groups(self) -> list[KindGroup]:
        """Every kind's tile, fields and examples; the chosen kind's are shown, the rest hidden."""
        chosen = self.chosen_kind
        return [
            KindGroup(
                name=name,
                label=kinds.label(name),
                blurb=kind.BLURB,
                default_model=settings.AIJOBS_MODELS.get(name, kind.DEFAULT_MODEL),
                checked=name == chosen,
                fields=[self[field] for field in self._fields_of(name) if field != "text"],
                examples=[
                    {"name": example.name, "values": self.values_for(name, example.input)}
                    for example in kind.EXAMPLES
                ],
            )
            for name, kind in kinds.KINDS.items()
        ]

    def job_input(self) -> dict[str, Any]:
        """The chosen kind's input; blank optional fields are left out so its defaults apply."""
        text = self.cleaned_data["text"]
        return {"text": text, **self.kind_params()} if text else self.kind_params()

    def kind_params(self) -> dict[str, Any]:
        """The chosen kind's own fields (all but the text), blank ones left out."""
        data = self.cleaned_data
        kind = data["kind"]
        keys = [key for key, _ in kind_forms.input_fields(kinds.get_kind(kind))]
        values = {key: data[field_name(kind, key)] for key in keys}
        return {key: value for key, value in values.items() if value not in (None, "")}

    def job_model(self) -> str | None:
        """The model asked for, or None for the kind's default."""
        return self.cleaned_data.get("model") or None

    def add_service_errors(self, details: list[dict[str, Any]] | None) -> None:
        """Put InvalidInput details (`loc` like ["input", "labels", 2]) next to their fields."""
        for detail in details or [{"loc": [], "msg": "The input is invalid."}]:
            field, message = self._locate(detail)
            self.add_error(field, message)

    def values_for(self, kind: str, input: dict[str, Any]) -> dict[str, Any]:
        """Every field of the kind as an input fills it in (its defaults where it is silent)."""
        values = {}
        for name in self._fields_of(kind):
            key = name.removeprefix(f"{kind}-")
            field = self.fields[name]
            value = input.get(key, field.initial)
            values[name] = "" if value is None else field.prepare_value(value)
        return values

    def _fields_of(self, kind: str) -> list[str]:
        module = kinds.get_kind(kind)
        return ["text", *(field_name(kind, key) for key, _ in kind_forms.input_fields(module))]

    def _locate(self, detail: dict[str, Any]) -> tuple[str | None, str]:
        """The field a service error names (None for the form as a whole) and its message."""
        loc = list(detail.get("loc") or [])
        if loc[:1] == ["input"]:
            loc = loc[1:]
            name = field_name(self.cleaned_data["kind"], str(loc[0])) if loc else None
        else:
            name = str(loc[0]) if loc else None
        field = name if name in self.fields else None
        error_type = detail.get("type", "")
        if error_type == "missing":
            return field, REQUIRED
        if len(loc) == 1:
            kind = kinds.get_kind(self.cleaned_data["kind"])
            return field, kind_forms.friendly_message(kind, str(loc[0]), error_type) or detail[
                "msg"
            ]
        if len(loc) > 1 and isinstance(loc[1], int):
            return field, f"Line {loc[1] + 1}: {detail['msg']}"
        return field, detail["msg"]

    def renew_idempotency_key(self) -> None:
        """Give the re-rendered form a new key, so its next submit is a new job."""
        self.data = self.data.copy()
        self.data["idempotency_key"] = str(uuid.uuid4())


class BatchForm(JobForm):
    """The new-batch form: a file of items, its columns, and the shared parameters of its kind.

    The shared parameters are the job form's fields of the kind but its text, which each item
    brings; like the job form, it turns strings into JSON types and leaves checking to the
    kind's Input (inside jobs.batches).
    """

    file = forms.FileField(
        label="File",
        help_text="A CSV file with a header row, or JSONL (one JSON object a line).",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.jsonl,.ndjson,text/csv"}),
    )
    # Offered from the file's first line by the page's script; any column name is accepted.
    text_column = forms.CharField(
        label="Text column", initial="text", widget=forms.Select(choices=[("text", "text")])
    )
    id_column = forms.CharField(
        required=False,
        label="ID column",
        help_text="Optional: each item's custom_id (otherwise its line number).",
        widget=forms.Select(choices=[NO_ID_COLUMN]),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.item_problems: list[ItemProblem] = []
        del self.fields["text"]
        self.fields["model"].help_text = "The same model for every item."
        # The page's script offers the file's columns; a re-rendered form (an error after a
        # submit) offers the ones it was posted with.
        text_column = self.data.get("text_column") or "text"
        id_column = self.data.get("id_column")
        self.fields["text_column"].widget.choices = [(text_column, text_column)]
        self.fields["id_column"].widget.choices = [
            NO_ID_COLUMN,
            *([(id_column, id_column)] if id_column else []),
        ]

    def file_format(self) -> str:
        """csv or jsonl, from the file's name."""
        name = self.cleaned_data["file"].name.lower()
        return "jsonl" if name.endswith(JSONL_SUFFIXES) else "csv"

    def read_options(self) -> dict[str, Any]:
        """How jobs.batch_files.read_items reads this form's file."""
        return {
            "file_format": self.file_format(),
            "text_column": self.cleaned_data["text_column"],
            "id_column": self.cleaned_data["id_column"] or None,
        }

    def add_service_errors(self, details: list[dict[str, Any]] | None) -> None:
        """Items' problems are listed by line; a problem with a shared parameter (every item
        has it, as the items of a CSV take their parameters from the form) goes next to its
        field, once."""
        details = details or [{"loc": [], "msg": "The batch is invalid."}]
        shared: dict[tuple[str, str], dict[str, Any]] = {}
        per_item = []
        for detail in details:
            loc = list(detail.get("loc") or [])
            if detail.get("item") is None or self._is_shared_param(loc):
                shared.setdefault((repr(loc), detail.get("msg", "")), detail)
            else:
                per_item.append(detail)
        self.item_problems = item_problems(per_item)
        if shared:
            super().add_service_errors(list(shared.values()))

    def _is_shared_param(self, loc: list[Any]) -> bool:
        if len(loc) < 2 or loc[0] != "input" or loc[1] in kind_forms.SHARED_FIELDS:
            return False
        return field_name(self.cleaned_data["kind"], str(loc[1])) in self.fields

    def _fields_of(self, kind: str) -> list[str]:
        return [name for name in super()._fields_of(kind) if name != "text"]


@dataclass(frozen=True)
class ItemProblem:
    """One problem of one item as a page lists it."""

    item: int
    custom_id: str | None
    field: str
    message: str


def item_problems(details: list[dict[str, Any]]) -> list[ItemProblem]:
    """InvalidInput details of items ({item, custom_id, loc, msg}) as the page lists them."""
    return [
        ItemProblem(
            item=detail["item"],
            custom_id=detail.get("custom_id"),
            field=_item_field(detail.get("loc") or []),
            message=detail.get("msg", ""),
        )
        for detail in details
    ]


def _item_field(loc: list[Any]) -> str:
    """The input field an item's problem names: `labels 3` for ["input", "labels", 2]."""
    path = list(loc[1:] if loc[:1] == ["input"] else loc)
    return " ".join(str(part + 1) if isinstance(part, int) else str(part) for part in path)


class JobFilterForm(forms.Form):
    """The jobs list's filters; an unknown value is dropped, so a stale link still shows jobs."""

    status = forms.ChoiceField(required=False, choices=[("", "All statuses"), *Status.choices])
    kind = forms.ChoiceField(required=False)
    # The items of one batch (its page links here); kept by the other filters as they change.
    batch = forms.UUIDField(required=False, widget=forms.HiddenInput)
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            ("", "All kinds"),
            *((name, kinds.label(name)) for name in kinds.names()),
        ]

    def filters(self) -> dict[str, Any]:
        """Keyword arguments for selectors.job_list from the valid fields."""
        self.is_valid()
        names = ("status", "kind", "batch", "cursor")
        return {name: self.cleaned_data.get(name) or None for name in names}


class DeliveryFilterForm(forms.Form):
    """The delivery log's filter; an unknown value is dropped, as on the jobs list."""

    status = forms.ChoiceField(
        required=False, choices=[("", "All deliveries"), *DeliveryStatus.choices]
    )
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    def filters(self) -> dict[str, Any]:
        """Keyword arguments for selectors.delivery_list from the valid fields."""
        self.is_valid()
        return {name: self.cleaned_data.get(name) or None for name in ("status", "cursor")}


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
