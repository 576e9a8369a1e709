"""Answers: JSON that fits the request's schema, built from the words of the prompt."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from devtools.claude_sim.source import Source, clip_words, word_limit
from devtools.claude_sim.values import Found, FoundDate, LineItem, value_in

# Shape heuristics: property names that ask for a particular kind of text.
SUMMARY_NAMES = ("summary", "abstract", "tldr", "synopsis")
REASON_NAMES = ("rationale", "reason", "explanation", "justification")
KEYWORD_NAMES = ("keyword", "tag", "topic")
CONFIDENCE_NAMES = ("confidence", "probability", "likelihood", "certainty", "score")
CONFIDENCE = 0.8
POINT_COUNT = 3
TITLE_WORDS = 8
DEFAULT_NUMBER = 1
OBJECT_ITEMS = 1
# Deep enough for real models; stops recursive ones (a tree of nodes) from growing without end.
MAX_SCHEMA_DEPTH = 8
FORMAT_SAMPLES = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "someone@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
CONSTRAINT_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
# What a property asks for, told by the words of its name (else of its description); the first
# kind with a matching word wins, so "phone_number" is a phone and "company_name" a company.
STRING_KINDS = {
    "email": ("email", "mail"),
    "phone": ("phone", "telephone", "tel", "mobile", "fax"),
    "date": ("date", "deadline", "birthday", "dob"),
    "identifier": ("number", "id", "no", "ref", "reference", "code"),
    "organisation": (
        "company", "organisation", "organization", "org", "employer", "vendor", "supplier",
        "seller", "issuer", "merchant", "customer", "client", "business", "firm",
    ),
    "venue": ("venue", "location", "place"),
    "title": ("title", "headline", "subject", "event"),
    "person": (
        "name", "person", "speaker", "author", "attendee", "participant", "presenter",
        "contact", "people", "guest", "host", "member", "owner",
    ),
}  # fmt: skip
NUMBER_KINDS = {
    "amount": ("amount", "total", "price", "cost", "sum", "fee", "subtotal", "balance", "tax"),
    "quantity": ("quantity", "qty", "count", "units", "number", "pieces"),
}
FORMAT_KINDS = {"email": "email", "date": "date", "date-time": "date"}
ISO_DATE_HINT_RE = re.compile(r"YYYY-MM-DD|\bISO\b", re.I)
NAME_WORD_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# The SDK moves constraints it cannot send into the description, as "{maximum: 1, minimum: 0}".
DESCRIBED_CONSTRAINT_RE = re.compile(rf"\b({'|'.join(CONSTRAINT_KEYS)})\s*:\s*(-?\d+(?:\.\d+)?)")


def answer_text(schema: dict[str, Any] | None, source: Source, invalid: bool) -> str:
    """The assistant's text: JSON fitting `schema` (or breaking it when `invalid`), else prose."""
    if schema is None:
        return "Sorry, I cannot help with that." if invalid else source.lead()
    filler = SchemaFiller(schema, source)
    value = filler.fill(schema)
    if invalid:
        return invalid_output(filler.resolve(schema), value)
    return json.dumps(value, ensure_ascii=False)


def _name_has(name: str, fragments: Sequence[str]) -> bool:
    lowered = name.lower()
    return any(fragment in lowered for fragment in fragments)


def words_of(name: str) -> list[str]:
    """The lowercase words of a property name or description: "unitPrice" -> unit, price."""
    return [word.lower() for word in NAME_WORD_RE.findall(name)]


def kind_of(kinds: dict[str, tuple[str, ...]], name: str, schema: dict[str, Any]) -> str | None:
    """The first of `kinds` whose words the name has, else the description has ("speakers":
    a word's plural counts).
    """
    for text in (name, str(schema.get("description", ""))):
        words = set(words_of(text))
        words |= {word[:-1] for word in words if word.endswith("s")}
        for kind, fragments in kinds.items():
            if words.intersection(fragments):
                return kind
    return None


def _repeated(values: Sequence[Any], count: int) -> list[Any]:
    return [values[i % len(values)] for i in range(count)]


def constraints(schema: dict[str, Any]) -> dict[str, float]:
    """Numeric constraints from schema keywords, or from the description the SDK moved them to."""
    found = {
        key: float(value)
        for key, value in DESCRIBED_CONSTRAINT_RE.findall(str(schema.get("description", "")))
    }
    for key in CONSTRAINT_KEYS:
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool):
            found[key] = float(schema[key])
    return found


def bounded_number(value: float, limits: dict[str, float], integer: bool) -> float | int:
    """`value` moved inside the schema's bounds (and made whole for an integer field)."""
    low = limits.get("minimum", -math.inf)
    high = limits.get("maximum", math.inf)
    if "exclusiveMinimum" in limits:
        low = max(low, limits["exclusiveMinimum"] + (1 if integer else 1e-6))
    if "exclusiveMaximum" in limits:
        high = min(high, limits["exclusiveMaximum"] - (1 if integer else 1e-6))
    value = min(max(value, low), high)
    if integer:
        whole = round(value)
        return whole if low <= whole <= high else math.ceil(low)
    return value


def schema_type(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), "null")
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


class SchemaFiller:
    """Builds a value that fits a JSON Schema, with words taken from a Source."""

    def __init__(self, root: dict[str, Any], source: Source) -> None:
        self._root = root
        self._source = source

    def fill(self, schema: dict[str, Any], name: str = "", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._source.best_labels(schema["enum"], 1)[0]
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants:
            return self.fill(self._pick_variant(variants, depth), name, depth)
        if schema.get("allOf"):
            return self.fill(self._merge(schema["allOf"]), name, depth)
        builders: dict[str, Callable[[dict[str, Any], str, int], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._number,
            "number": self._number,
            "boolean": self._boolean,
            "null": lambda *_: None,
        }
        return builders.get(schema_type(schema), self._string)(schema, name, depth)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow a local `$ref` ("#/$defs/Item") to the schema it names."""
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < MAX_SCHEMA_DEPTH:
            target: Any = self._root
            for part in schema["$ref"].removeprefix("#").strip("/").split("/"):
                if part:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            schema, seen = target, seen + 1
        return schema

    def _pick_variant(self, variants: list[dict[str, Any]], depth: int) -> dict[str, Any]:
        # Prefer a real value to null, unless recursion is getting too deep.
        resolved = [self.resolve(v) for v in variants]
        non_null = [v for v in resolved if schema_type(v) != "null" or "const" in v or "enum" in v]
        if depth >= MAX_SCHEMA_DEPTH and len(non_null) < len(resolved):
            return {"type": "null"}
        return (non_null or resolved)[0]

    def _merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in (self.resolve(p) for p in parts):
            properties = {**merged.get("properties", {}), **part.get("properties", {})}
            required = [*merged.get("required", []), *part.get("required", [])]
            merged = {**merged, **part, "properties": properties, "required": required}
        return merged

    def _object(self, schema: dict[str, Any], name: str, depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        if depth >= MAX_SCHEMA_DEPTH:
            properties = {k: v for k, v in properties.items() if k in schema.get("required", [])}
        return {key: self.fill(sub, key, depth + 1) for key, sub in properties.items()}

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = self.resolve(schema.get("items") or {})
        limits = constraints(schema)
        if items.get("enum"):
            wanted = self._item_count(limits, default=1, available=len(items["enum"]))
            return self._source.best_labels(items["enum"], wanted)
        if schema_type(items) == "string" and not _is_special_string(items):
            typed = self._typed_strings(items, name, kind_of(STRING_KINDS, name, schema))
            if typed:
                return _repeated(typed, self._item_count(limits, default=len(typed)))
            return self._strings(name, self._item_count(limits, default=POINT_COUNT))
        line_items = self._source.found.line_items if self._is_line_item(items) else []
        if line_items:
            count = self._item_count(limits, default=len(line_items))
            return [
                self._line_item(items, item, name, depth) for item in _repeated(line_items, count)
            ]
        default = 0 if depth >= MAX_SCHEMA_DEPTH else OBJECT_ITEMS
        count = self._item_count(limits, default=default)
        return [self.fill(items, name, depth + 1) for _ in range(count)]

    @staticmethod
    def _item_count(limits: dict[str, float], default: int, available: int | None = None) -> int:
        count = max(default, int(limits.get("minItems", 0)))
        count = min(count, int(limits.get("maxItems", count)))
        return count if available is None else min(count, available)

    def _typed_strings(self, items: dict[str, Any], name: str, kind: str | None) -> list[str]:
        """Every value of `kind` in the text ("speakers": the names), sized for the items."""
        if kind == "date":
            dates = self._source.found.dates
            found = [self._date_form(date, items) for date in dates]
        else:
            found = self._source.found.values(kind) if kind else []
        return [self._sized(value, constraints(items)) for value in found]

    def _is_line_item(self, items: dict[str, Any]) -> bool:
        """Whether array items look like order lines: an object with an amount or quantity."""
        properties = items.get("properties", {}) if schema_type(items) == "object" else {}
        return any(kind_of(NUMBER_KINDS, key, self.resolve(sub)) for key, sub in properties.items())

    def _line_item(self, items: dict[str, Any], item: LineItem, name: str, depth: int) -> Any:
        return SchemaFiller(self._root, self._source.scoped(item)).fill(items, name, depth + 1)

    def _strings(self, name: str, count: int) -> list[str]:
        if _name_has(name, KEYWORD_NAMES):
            words = self._source.top_words(count)
            return words + [f"{name}{i}" for i in range(len(words), count)]
        return self._source.points(count)

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> str:
        return self._sized(self._string_text(schema, name), constraints(schema))

    def _sized(self, text: str, limits: dict[str, float]) -> str:
        minimum = int(limits.get("minLength", 0))
        if len(text) < minimum:
            text = (text + " " + self._source.document).strip().ljust(minimum, ".")
        return text[: int(limits["maxLength"])] if "maxLength" in limits else text

    def _string_text(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt in FORMAT_SAMPLES:
            kind = FORMAT_KINDS.get(str(fmt))
            return (kind and self._typed_string(kind, schema, name)) or FORMAT_SAMPLES[fmt]
        if _name_has(name, SUMMARY_NAMES):
            return self._source.lead(word_limit(str(schema.get("description", ""))))
        if _name_has(name, REASON_NAMES):
            return self._source.reason()
        kind = kind_of(STRING_KINDS, name, schema)
        typed = self._typed_string(kind, schema, name) if kind else None
        if typed is not None:
            return typed
        if kind == "title" and self._source.sentences:
            return clip_words(self._source.sentences[0], TITLE_WORDS)
        near = self._source.value_after(name) if name else None
        return near or self._source.subject or self._source.next_words()

    def _typed_string(self, kind: str, schema: dict[str, Any], name: str) -> str | None:
        """A value of `kind` stated after the property's name, else the text's next one."""
        near = self._source.value_after(name) if name else None
        if kind == "date":
            dates = Found.of(near).dates if near else []
            date = dates[0] if dates else self._source.take_date()
            return self._date_form(date, schema) if date else None
        return (near and value_in(kind, near)) or self._source.take(kind)

    @staticmethod
    def _date_form(date: FoundDate, schema: dict[str, Any]) -> str:
        """The date as written, unless the schema asks for YYYY-MM-DD (or a date-time)."""
        if schema.get("format") == "date-time":
            return f"{date.iso}T00:00:00Z"
        asks_iso = ISO_DATE_HINT_RE.search(str(schema.get("description", "")))
        return date.iso if schema.get("format") == "date" or asks_iso else date.text

    def _boolean(self, schema: dict[str, Any], name: str, depth: int) -> bool:
        """True when a sentence of the text says the property's words ("streamed online")."""
        return self._source.affirms(words_of(name))

    def _number(self, schema: dict[str, Any], name: str, depth: int) -> float | int:
        integer = schema_type(schema) == "integer"
        limits = constraints(schema)
        if _name_has(name, CONFIDENCE_NAMES):
            low, high = limits.get("minimum", 0.0), limits.get("maximum", 1.0)
            return bounded_number(low + CONFIDENCE * (high - low), limits, integer)
        kind = kind_of(NUMBER_KINDS, name, schema)
        whole = integer or kind == "quantity"
        found = self._source.number_after(name, whole) if name else None
        if found is None:
            found = self._source.next_number(whole, amount=kind == "amount")
        return bounded_number(DEFAULT_NUMBER if found is None else found, limits, integer)


def _is_special_string(schema: dict[str, Any]) -> bool:
    return schema.get("format") in FORMAT_SAMPLES or "const" in schema


def invalid_output(schema: dict[str, Any], valid: Any) -> str:
    """Output breaking the schema: the valid answer minus its first required field, or prose."""
    required = schema.get("required") or []
    if isinstance(valid, dict) and required and required[0] in valid:
        return json.dumps({k: v for k, v in valid.items() if k != required[0]})
    return "Sorry, I cannot answer in the requested format."
