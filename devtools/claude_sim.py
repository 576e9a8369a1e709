"""A Claude simulator: an HTTP server speaking enough of the Messages API for the real SDK.

Run it as ``python -m devtools.claude_sim --port PORT`` (``--port 0`` picks a free
port) and point the SDK at it with ``ANTHROPIC_BASE_URL``. Once listening it
prints exactly one line, ``claude_sim listening on http://HOST:PORT``, and
nothing else: API keys and request bodies are never logged. SIGTERM and SIGINT
stop it cleanly. Tests can run it in-process instead:
``url, stop = serve_in_thread(port=0, latency_ms=..., fault_rate=..., rpm=..., seed=...)``.

It is one asyncio thread with a minimal HTTP/1.1 server (keep-alive,
Content-Length request bodies, chunked SSE answers), so hundreds of slow
requests wait concurrently without threads.

Endpoints
---------
``POST /v1/messages``
    Streaming (``"stream": true``) or not. A request with a JSON schema in
    ``output_config.format`` gets JSON fitting that schema, built from the text of
    the first user message without its directives (or, when that message fences
    a document in ``<tag>...</tag>`` or triple backticks, from the longest fenced
    part, so that instructions and label lists around it do not count): lead
    sentences for summaries (within a "max_words: N" / "at most N words" limit
    found in the prompt), sentences for string lists, the enum label with most
    word overlap, numbers found in the text, ``false`` for booleans. Without a
    schema the answer is the lead sentences as plain text. Answers longer than
    ``max_tokens`` are cut and end with ``stop_reason: "max_tokens"``.
    Usage is about one token per four characters. A system prompt given as text
    blocks with ``cache_control`` is cached: the first request with a given
    system text reports ``cache_creation_input_tokens``, later ones
    ``cache_read_input_tokens`` (there is no minimum length and no expiry).
``GET /_sim/stats``
    ``{"total", "by_outcome": {"ok", "invalid", "429", "529", "500", "400",
    "401", "timeout", "rate_limited"}, "in_flight", "max_in_flight",
    "disconnected", "cpu_seconds", "options"}``. ``total`` counts every
    ``POST /v1/messages`` received and is the sum of ``by_outcome``;
    ``disconnected`` counts requests whose client hung up before the answer.
``POST /_sim/reset``
    Zeroes the statistics, the per-text directive counters and the cache.
``GET /_sim/health``
    200 ``{"status": "ok"}``.

Fault directives
----------------
Directives are searched in the text of all user messages; a directive repeated
verbatim counts once (a repair round may quote the job text).

``[[sim:429*N]]``, ``[[sim:529*N]]``, ``[[sim:500*N]]``, ``[[sim:timeout*N]]``,
``[[sim:invalid*N]]``
    Counted directives. Requests are numbered per *job text*, the text of the
    first user message, so a retry and a repair round of one job share one
    counter. Request number k (1-based) gets the outcome of the first counted
    directive whose cumulative range covers k, in the order the directives
    appear in the text; later requests succeed. ``[[sim:429*2]] [[sim:invalid*1]]``
    gives 429, 429, invalid output, then valid output. A 429 carries
    ``retry-after: 1``; ``timeout`` holds the request for 600 s (the client gives
    up first); ``invalid`` answers HTTP 200 with output that violates the schema
    (a required field missing, or prose instead of JSON).
``[[sim:400]]``, ``[[sim:401]]``
    Every such request fails with that status, before any counted directive
    (and without advancing the counter). The first one in the text wins.
``[[sim:latency=MS]]``
    This request's answer takes MS milliseconds instead of ``--latency-ms``.

Latency applies to HTTP 200 answers only: errors come back at once, as the
real API's rate-limit and overload errors do. On top of the directives, the
``--rpm`` limit answers 429 (outcome ``rate_limited``) before a request is
numbered, and ``--fault-rate`` turns that fraction of would-be-200 answers into
a random 429, 529 or 500 (after the request was numbered, counted under that
status).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import hashlib
import http
import json
import math
import random
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# The one line printed at start; url_from_banner reads it.
BANNER = "claude_sim listening on "
DEFAULT_HOST = "127.0.0.1"
MESSAGES_PATH = "/v1/messages"
# A hung request outlives any sensible client timeout, and ends when the client hangs up.
HANG_SECONDS = 600.0
# The SDK's connection pool reuses idle connections for a few seconds; stay open much longer.
KEEPALIVE_IDLE_SECONDS = 300.0
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
# The default listen backlog (100) would refuse part of a burst of several hundred connections.
LISTEN_BACKLOG = 2048
RPM_WINDOW_SECONDS = 60.0
CHARS_PER_TOKEN = 4
STREAM_CHUNK_WORDS = 3
STARTUP_TIMEOUT_SECONDS = 10.0

USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
OUTCOMES = ("ok", "invalid", "429", "529", "500", "400", "401", "timeout", "rate_limited")
COUNTED_FAULTS = ("429", "529", "500", "timeout", "invalid")
RANDOM_FAULTS = ("429", "529", "500")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    501: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    "400": "Simulated invalid request.",
    "401": "Simulated invalid x-api-key.",
    "429": "Simulated rate limit: too many requests.",
    "500": "Simulated internal server error.",
    "529": "Simulated overload.",
}
REASON_PHRASES = {529: "Overloaded"}

# Shape heuristics: property names that ask for a particular kind of text.
SUMMARY_NAMES = ("summary", "abstract", "tldr", "synopsis")
REASON_NAMES = ("rationale", "reason", "explanation", "justification")
TITLE_NAMES = ("title", "headline", "subject")
KEYWORD_NAMES = ("keyword", "tag", "topic")
CONFIDENCE_NAMES = ("confidence", "probability", "likelihood", "certainty", "score")
CONFIDENCE = 0.8
SUMMARY_SENTENCES = 2
POINT_COUNT = 3
POINT_WORDS = 15
TITLE_WORDS = 8
FILLER_WORDS = 3
NAMED_VALUE_WORDS = 6
DEFAULT_NUMBER = 1
OBJECT_ITEMS = 1
# Deep enough for real models; stops recursive ones (a tree of nodes) from growing without end.
MAX_SCHEMA_DEPTH = 8
# Two words are "the same" when they share this many leading characters (politics/political).
STEM_CHARS = 5
MIN_STEM_CHARS = 4
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
STOPWORD_TEXT = (
    "a about after all also an and any are as at be been but by can could did do does for "
    "from had has have he her his how i if in into is it its just may more most my no not "
    "of on or our out she so than that the their them then there these they this to too up "
    "us was we were what when which who will with would you your"
)
STOPWORDS = frozenset(STOPWORD_TEXT.split())

DIRECTIVE_RE = re.compile(r"\[\[sim:([a-z0-9]+)(?:\*(\d+)|=(\d+))?\]\]")
WORD_RE = re.compile(r"[A-Za-z0-9][\w'-]*")
NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
ISO_DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
FENCED_RES = (
    re.compile(r"<([A-Za-z][\w-]*)[^>]*>(.*?)</\1\s*>", re.S),
    re.compile(r"```[\w-]*\n?(.*?)```", re.S),
)
WORD_LIMIT_RES = (
    re.compile(r"max_words\W{0,3}(\d+)", re.I),
    re.compile(
        r"(?:at most|no more than|up to|maximum of|max(?:imum)?|under|fewer than|less than"
        r"|within)\s+(\d+)\s+words",
        re.I,
    ),
    re.compile(r"(\d+)\s+words\s+(?:or (?:fewer|less)|max(?:imum)?|at most)", re.I),
)
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
# The SDK moves constraints it cannot send into the description, as "{maximum: 1, minimum: 0}".
DESCRIBED_CONSTRAINT_RE = re.compile(rf"\b({'|'.join(CONSTRAINT_KEYS)})\s*:\s*(-?\d+(?:\.\d+)?)")


# --------------------------------------------------------------------------- text


def estimate_tokens(text: str) -> int:
    """About one token per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of blocks of which text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


def user_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The text of every user message, in order."""
    return [content_text(m.get("content")) for m in messages if m.get("role") == "user"]


def system_blocks(system: Any) -> list[dict[str, Any]]:
    """The system prompt as text blocks (a plain string is one block without cache_control)."""
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    if isinstance(system, list):
        return [b for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def strip_directives(text: str) -> str:
    return DIRECTIVE_RE.sub("", text)


def document_of(text: str) -> str:
    """The longest fenced part of a prompt (the user's data), else the whole prompt."""
    fenced = [m.group(m.lastindex or 0) for pattern in FENCED_RES for m in pattern.finditer(text)]
    fenced = [part.strip() for part in fenced if part.strip()]
    return max(fenced, key=len) if fenced else text.strip()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT_RE.split(text) if s and s.strip()]


def clip_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit])


def word_limit(prompt: str) -> int | None:
    """The smallest word limit the prompt states ("max_words: 50", "at most 50 words"), if any."""
    found = [int(m.group(1)) for pattern in WORD_LIMIT_RES for m in pattern.finditer(prompt)]
    found = [n for n in found if n > 0]
    return min(found) if found else None


def stem_matches(a: str, b: str) -> bool:
    """Whether two lowercase words look like forms of one word (tech/technology, sport/sports)."""
    if a == b:
        return True
    shared = min(STEM_CHARS, len(a), len(b))
    return shared >= MIN_STEM_CHARS and a[:shared] == b[:shared]


class Source:
    """The text an answer is built from, and the questions a schema walk asks of it."""

    def __init__(self, document: str, prompt: str) -> None:
        self.document = document
        self.limit = word_limit(prompt)
        self.sentences = split_sentences(document)
        self.words = WORD_RE.findall(document)
        lowered = [w.lower() for w in self.words]
        self.counts = collections.Counter(lowered)
        self.content_words = [w for w in lowered if w not in STOPWORDS and not w.isdigit()]
        self.numbers = NUMBER_RE.findall(document)
        self._by_prefix: dict[str, list[str]] = collections.defaultdict(list)
        for word in self.counts:
            self._by_prefix[word[:MIN_STEM_CHARS]].append(word)
        self._word_cursor = 0
        self._number_cursor = 0

    def lead(self, limit: int | None = None) -> str:
        """The lead sentences within `limit` or the prompt's word limit, else the first two."""
        if not self.sentences:
            return "The text is empty."
        limits = [n for n in (limit, self.limit) if n is not None]
        if not limits:
            return " ".join(self.sentences[:SUMMARY_SENTENCES])
        chosen: list[str] = []
        for sentence in self.sentences:
            if len(" ".join([*chosen, sentence]).split()) > min(limits):
                break
            chosen.append(sentence)
        return " ".join(chosen) if chosen else clip_words(self.sentences[0], min(limits))

    def points(self, count: int) -> list[str]:
        """`count` short sentences from the text, repeating them if the text has too few."""
        pool = [clip_words(s, POINT_WORDS) for s in self.sentences] or ["The text is empty."]
        return [pool[i % len(pool)] for i in range(count)]

    def top_words(self, count: int) -> list[str]:
        ranked = collections.Counter(self.content_words).most_common(count)
        return [word for word, _ in ranked]

    def reason(self) -> str:
        top = self.top_words(3)
        if not top:
            return "The text gives little to go on."
        return f"The text is mostly about {', '.join(top)}."

    def label_score(self, label: Any) -> tuple[int, int]:
        """How well a label matches the text: (its distinct words found, how often they occur)."""
        tokens = WORD_RE.findall(str(label).lower())
        tokens = [t for t in tokens if t not in STOPWORDS] or tokens
        found = total = 0
        for token in tokens:
            hits = sum(
                self.counts[word]
                for word in self._by_prefix.get(token[:MIN_STEM_CHARS], [])
                if stem_matches(token, word)
            )
            found += hits > 0
            total += hits
        return found, total

    def best_labels(self, labels: Sequence[Any], count: int) -> list[Any]:
        """The `count` labels with most word overlap; ties keep the schema's order."""
        scored = sorted(enumerate(labels), key=lambda pair: (self.label_score(pair[1]), -pair[0]))
        return [label for _, label in reversed(scored[-count:])]

    def next_words(self, count: int = FILLER_WORDS) -> str:
        """The next few words of the text, so that sibling fields get different words."""
        if not self.words:
            return "n/a"
        start = self._word_cursor
        self._word_cursor += count
        return " ".join(self.words[(start + i) % len(self.words)] for i in range(count))

    def value_after(self, name: str) -> str | None:
        """The words after a mention of `name` ("customer: ACME Corp" -> "ACME Corp")."""
        phrase = r"[\s_-]+".join(re.escape(part) for part in re.split(r"[\s_-]+", name) if part)
        if not phrase:
            return None
        # The value runs to the next clause break; a dot inside a number ("99.50") is no break.
        pattern = rf"\b{phrase}\b\s*(?:is|was|:|=|-)?\s*(.+?)(?=[,;:]|[.!?](?!\d)|\n|$)"
        match = re.search(pattern, self.document, re.I)
        return clip_words(match.group(1).strip(), NAMED_VALUE_WORDS) if match else None

    def number_after(self, name: str, integer: bool) -> float | None:
        after = self.value_after(name)
        candidates = NUMBER_RE.findall(after or "")
        return _first_number(candidates, integer)

    def next_number(self, integer: bool) -> float | None:
        """The next number of the text (integers only for an integer field)."""
        pool = [n for n in self.numbers if not integer or "." not in n]
        if not pool:
            return None
        value = float(pool[self._number_cursor % len(pool)])
        self._number_cursor += 1
        return value

    def date(self) -> str | None:
        match = ISO_DATE_RE.search(self.document)
        return match.group(0) if match else None


def _first_number(candidates: Iterable[str], integer: bool) -> float | None:
    for candidate in candidates:
        if not integer or "." not in candidate:
            return float(candidate)
    return None


def _name_has(name: str, fragments: Sequence[str]) -> bool:
    lowered = name.lower()
    return any(fragment in lowered for fragment in fragments)


# ------------------------------------------------------------------------- schema


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
            "boolean": lambda *_: False,
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
            return self._strings(name, self._item_count(limits, default=POINT_COUNT))
        default = 0 if depth >= MAX_SCHEMA_DEPTH else OBJECT_ITEMS
        count = self._item_count(limits, default=default)
        return [self.fill(items, name, depth + 1) for _ in range(count)]

    @staticmethod
    def _item_count(limits: dict[str, float], default: int, available: int | None = None) -> int:
        count = max(default, int(limits.get("minItems", 0)))
        count = min(count, int(limits.get("maxItems", count)))
        return count if available is None else min(count, available)

    def _strings(self, name: str, count: int) -> list[str]:
        if _name_has(name, KEYWORD_NAMES):
            words = self._source.top_words(count)
            return words + [f"{name}{i}" for i in range(len(words), count)]
        return self._source.points(count)

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> str:
        limits = constraints(schema)
        text = self._string_text(schema, name)
        minimum = int(limits.get("minLength", 0))
        if len(text) < minimum:
            text = (text + " " + self._source.document).strip().ljust(minimum, ".")
        return text[: int(limits["maxLength"])] if "maxLength" in limits else text

    def _string_text(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        if fmt in FORMAT_SAMPLES:
            date = self._source.date()
            if date and fmt in ("date", "date-time"):
                return date if fmt == "date" else f"{date}T00:00:00Z"
            return FORMAT_SAMPLES[fmt]
        if _name_has(name, SUMMARY_NAMES):
            return self._source.lead(word_limit(str(schema.get("description", ""))))
        if _name_has(name, REASON_NAMES):
            return self._source.reason()
        if _name_has(name, TITLE_NAMES) and self._source.sentences:
            return clip_words(self._source.sentences[0], TITLE_WORDS)
        return (name and self._source.value_after(name)) or self._source.next_words()

    def _number(self, schema: dict[str, Any], name: str, depth: int) -> float | int:
        integer = schema_type(schema) == "integer"
        limits = constraints(schema)
        if _name_has(name, CONFIDENCE_NAMES):
            low, high = limits.get("minimum", 0.0), limits.get("maximum", 1.0)
            return bounded_number(low + CONFIDENCE * (high - low), limits, integer)
        found = self._source.number_after(name, integer) if name else None
        if found is None:
            found = self._source.next_number(integer)
        return bounded_number(DEFAULT_NUMBER if found is None else found, limits, integer)


def _is_special_string(schema: dict[str, Any]) -> bool:
    return schema.get("format") in FORMAT_SAMPLES or "const" in schema


def invalid_output(schema: dict[str, Any], valid: Any) -> str:
    """Output breaking the schema: the valid answer minus its first required field, or prose."""
    required = schema.get("required") or []
    if isinstance(valid, dict) and required and required[0] in valid:
        return json.dumps({k: v for k, v in valid.items() if k != required[0]})
    return "Sorry, I cannot answer in the requested format."


# --------------------------------------------------------------------- directives


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
            if kind in COUNTED_FAULTS and times:
                counted.append((kind, int(times)))
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


# ---------------------------------------------------------------------- simulator


@dataclass(frozen=True)
class SimOptions:
    """The simulator's command-line settings."""

    latency_ms: int = 0
    fault_rate: float = 0.0
    rpm: int = 0
    seed: int | None = None


@dataclass
class Stats:
    total: int = 0
    by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    in_flight: int = 0
    max_in_flight: int = 0
    disconnected: int = 0

    def record(self, outcome: str) -> None:
        self.total += 1
        self.by_outcome[outcome] += 1

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counts; requests still being answered stay in flight."""
        self.total = self.disconnected = 0
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self.max_in_flight = self.in_flight


@dataclass(frozen=True)
class Reply:
    """What to answer to one Messages request, decided on arrival."""

    status: int
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    delay_seconds: float = 0.0
    hang: bool = False
    stream: bool = False


class RequestError(Exception):
    """A request that cannot be served as sent; answered with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_payload(status: int, message: str, request_id: str = "") -> dict[str, Any]:
    """An Anthropic-shaped error body."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    if request_id:
        body["request_id"] = request_id
    return body


def new_request_id() -> str:
    return f"req_sim_{uuid.uuid4().hex[:24]}"


def has_credentials(headers: dict[str, str]) -> bool:
    bearer = headers.get("authorization", "")
    return bool(headers.get("x-api-key")) or (
        bearer.lower().startswith("bearer ") and bool(bearer[7:].strip())
    )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body, checked just enough to build an answer (messages, model, max_tokens)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    if not isinstance(body.get("model"), str):
        raise RequestError(400, "model: field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise RequestError(400, "max_tokens: must be a positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: at least one message is required")
    if not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "messages: each message must be an object")
    return body


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema asked for in `output_config.format` (or the older `output_format`)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _digest(text: str) -> bytes:
    # Counters and the cache keep digests, not prompts, so memory stays small.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class Simulator:
    """The simulator's state and decisions, independent of HTTP."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self._rng = random.Random(options.seed)
        self.stats = Stats()
        self._counters: dict[bytes, int] = {}
        self._cached_systems: set[bytes] = set()
        self._recent: collections.deque[float] = collections.deque()

    def reset(self) -> None:
        """Zero everything but the requests still being answered."""
        self.stats.reset()
        self._counters.clear()
        self._cached_systems.clear()
        self._recent.clear()

    def stats_json(self) -> dict[str, Any]:
        return {
            **asdict(self.stats),
            "cpu_seconds": round(time.process_time(), 3),
            "options": asdict(self.options),
        }

    def decide(self, headers: dict[str, str], raw_body: bytes) -> Reply:
        """Number the request, pick its outcome, record it and build the answer."""
        request_id = new_request_id()
        outcome, reply = self._decide(headers, raw_body, request_id)
        self.stats.record(outcome)
        return reply

    def _decide(self, headers: dict[str, str], raw: bytes, request_id: str) -> tuple[str, Reply]:
        if not has_credentials(headers):
            message = "Missing API key: send x-api-key or Authorization: Bearer."
            return "401", self._error(401, message, request_id)
        try:
            body = parse_body(raw)
        except RequestError as exc:
            return "400", self._error(400, exc.message, request_id)
        retry_after = self._rpm_retry_after()
        if retry_after is not None:
            message = f"Simulated limit of {self.options.rpm} requests per minute."
            return "rate_limited", self._error(429, message, request_id, retry_after)
        texts = user_texts(body["messages"])
        directives = Directives.parse("\n".join(texts))
        outcome = self._outcome(directives, texts[0] if texts else "")
        if outcome in ERROR_MESSAGES:
            return outcome, self._error(int(outcome), ERROR_MESSAGES[outcome], request_id)
        latency = (
            self.options.latency_ms if directives.latency_ms is None else directives.latency_ms
        )
        reply = Reply(
            status=200,
            payload=self._message(body, texts, invalid=outcome == "invalid"),
            headers=(("request-id", request_id),),
            delay_seconds=latency / 1000,
            hang=outcome == "timeout",
            stream=body.get("stream") is True,
        )
        return outcome, reply

    def _rpm_retry_after(self) -> int | None:
        """Seconds until the rpm window has room, or None when this request fits in it."""
        if self.options.rpm <= 0:
            return None
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - RPM_WINDOW_SECONDS:
            self._recent.popleft()
        if len(self._recent) >= self.options.rpm:
            return max(1, math.ceil(self._recent[0] + RPM_WINDOW_SECONDS - now))
        self._recent.append(now)
        return None

    def _outcome(self, directives: Directives, first_text: str) -> str:
        """The directives' verdict for this request, or a random fault instead of a 200."""
        if directives.permanent:
            return directives.permanent
        outcome = "ok"
        if directives.counted:
            key = _digest(first_text)
            self._counters[key] = number = self._counters.get(key, 0) + 1
            outcome = directives.outcome_for(number)
        fault_rate = self.options.fault_rate
        if outcome in ("ok", "invalid") and fault_rate > 0 and self._rng.random() < fault_rate:
            return self._rng.choice(RANDOM_FAULTS)
        return outcome

    @staticmethod
    def _error(status: int, message: str, request_id: str, retry_after: int = 0) -> Reply:
        headers = [("request-id", request_id)]
        if status == 429:
            headers.append(("retry-after", str(retry_after or 1)))
        return Reply(status, error_payload(status, message, request_id), tuple(headers))

    def _message(self, body: dict[str, Any], texts: list[str], *, invalid: bool) -> dict[str, Any]:
        blocks = system_blocks(body.get("system"))
        first = strip_directives(texts[0] if texts else "")
        instructions = "\n".join(b["text"] for b in blocks) + "\n" + first
        text = answer_text(
            requested_schema(body), Source(document_of(first), instructions), invalid
        )
        output_tokens = estimate_tokens(text)
        stop_reason = "end_turn"
        if output_tokens > body["max_tokens"]:
            text = text[: body["max_tokens"] * CHARS_PER_TOKEN]
            output_tokens, stop_reason = body["max_tokens"], "max_tokens"
        return {
            "id": f"msg_sim_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(blocks, body["messages"], output_tokens),
        }

    def _usage(
        self, blocks: list[dict[str, Any]], messages: list[dict[str, Any]], output_tokens: int
    ) -> dict[str, Any]:
        total = estimate_tokens("".join(b["text"] for b in blocks))
        total += sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
        created, read = self._cache_use(blocks)
        return {
            # As in the real API, input_tokens leaves out what the cache wrote or read.
            "input_tokens": max(total - created - read, 0),
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "service_tier": "standard",
        }

    def _cache_use(self, blocks: list[dict[str, Any]]) -> tuple[int, int]:
        """Tokens (written to, read from) the cache: the system blocks up to the last marked one."""
        marked = [i + 1 for i, b in enumerate(blocks) if b.get("cache_control")]
        if not marked:
            return 0, 0
        prefix = "".join(b["text"] for b in blocks[: marked[-1]])
        key = _digest(prefix)
        if key in self._cached_systems:
            return 0, estimate_tokens(prefix)
        self._cached_systems.add(key)
        return estimate_tokens(prefix), 0


def answer_text(schema: dict[str, Any] | None, source: Source, invalid: bool) -> str:
    """The assistant's text: JSON fitting `schema` (or breaking it when `invalid`), else prose."""
    if schema is None:
        return "Sorry, I cannot help with that." if invalid else source.lead()
    filler = SchemaFiller(schema, source)
    value = filler.fill(schema)
    if invalid:
        return invalid_output(filler.resolve(schema), value)
    return json.dumps(value, ensure_ascii=False)


def stream_pieces(text: str) -> list[str]:
    """The text cut into deltas of a few words each, whitespace kept."""
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    return [
        "".join(tokens[i : i + STREAM_CHUNK_WORDS])
        for i in range(0, len(tokens), STREAM_CHUNK_WORDS)
    ]


def sse_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events that stream `message`, as the real API orders them."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        text = block["text"]
        empty = {"type": "text", "text": ""}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        for piece in stream_pieces(text):
            delta = {"type": "text_delta", "text": piece}
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {key: usage[key] for key in USAGE_COUNTS}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, path (without query), version and lowercase headers of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise RequestError(400, "Malformed request line.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise RequestError(400, "Malformed header line.")
            headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1].split("?", 1)[0], parts[2], headers


def wants_keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


def status_line(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = REASON_PHRASES.get(status, "Unknown")
    return f"HTTP/1.1 {status} {phrase}\r\n"


class Connection:
    """One client connection: reads requests, writes answers, notices a client that left."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # A byte read while watching for a hang-up belongs to the next request.
        self._pending = b""

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection between requests."""
        try:
            head = self._pending + await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # The client closed the connection: nobody to answer.
        except asyncio.LimitOverrunError:
            raise RequestError(431, "Request head too large.") from None
        self._pending = b""
        method, path, version, headers = parse_head(head)
        if "transfer-encoding" in headers:
            raise RequestError(
                501, "Chunked request bodies are not supported; send Content-Length."
            )
        body = await self._reader.readexactly(self._content_length(headers))
        return Request(method, path, headers, body, wants_keep_alive(version, headers))

    @staticmethod
    def _content_length(headers: dict[str, str]) -> int:
        raw = headers.get("content-length", "0")
        if not raw.isdigit():
            raise RequestError(400, "Invalid Content-Length.")
        if int(raw) > MAX_BODY_BYTES:
            raise RequestError(413, "Request body too large.")
        return int(raw)

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client hangs up (it gave up waiting)."""
        if seconds <= 0:
            return True
        deadline = time.monotonic() + seconds
        watcher = asyncio.ensure_future(self._reader.read(1))
        try:
            done, _ = await asyncio.wait({watcher}, timeout=seconds)
        finally:
            if not watcher.done():
                # A reader allows one waiting read at a time: let the watcher finish
                # cancelling before anyone reads the next request.
                watcher.cancel()
                await asyncio.wait({watcher})
        if not done:
            return True
        try:
            data = watcher.result()
        except OSError:
            return False
        if not data:
            return False
        # HTTP/1.1 pipelining: the next request has started; keep its byte, stop watching.
        self._pending += data
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
        return True

    async def send(
        self,
        status: int,
        payload: dict[str, Any],
        *,
        keep_alive: bool,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *headers,
        ]
        self._writer.write(self._head(status, head, keep_alive) + body)
        await self._writer.drain()

    async def send_events(
        self,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        keep_alive: bool,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A 200 answer of server-sent events, one chunk per event."""
        head = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            *headers,
        ]
        self._writer.write(self._head(200, head, keep_alive))
        for name, data in events:
            chunk = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
            self._writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await self._writer.drain()
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    @staticmethod
    def _head(status: int, headers: Sequence[tuple[str, str]], keep_alive: bool) -> bytes:
        lines = [status_line(status)]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append(f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        return "".join(lines).encode("latin-1")

    def close(self) -> None:
        self._writer.close()


class SimServer:
    """Routes requests to the Simulator and keeps track of open connections."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        connection = Connection(reader, writer)
        try:
            while await self._serve_one(connection):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # The client left mid-request or went idle: nothing to answer.
        except asyncio.CancelledError:
            # Shutdown. Ending normally matters: Python 3.11's stream callback calls
            # task.exception() on a cancelled task and prints a spurious error.
            pass
        except Exception as exc:  # One bad request must not stop the server.
            report_internal_error(exc)
        finally:
            if task is not None:
                self._tasks.discard(task)
            connection.close()

    async def close_connections(self) -> None:
        """Cancel every open connection, hung requests included."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_one(self, connection: Connection) -> bool:
        """Answer one request; whether to keep the connection open for another."""
        try:
            async with asyncio.timeout(KEEPALIVE_IDLE_SECONDS):
                request = await connection.read_request()
        except RequestError as exc:
            await connection.send(
                exc.status, error_payload(exc.status, exc.message), keep_alive=False
            )
            return False
        if request is None:
            return False
        if request.path == MESSAGES_PATH and request.method == "POST":
            return await self._messages(connection, request)
        status, payload = self._control(request)
        await connection.send(status, payload, keep_alive=request.keep_alive)
        return request.keep_alive

    async def _messages(self, connection: Connection, request: Request) -> bool:
        reply = self.simulator.decide(request.headers, request.body)
        stats = self.simulator.stats  # reset() zeroes it in place, so in_flight stays right
        stats.enter()
        try:
            delay = HANG_SECONDS if reply.hang else reply.delay_seconds
            if not await connection.pause(delay):
                stats.disconnected += 1
                return False
            if reply.hang:
                return False
            if reply.stream and reply.status == 200:
                events = sse_events(reply.payload)
                await connection.send_events(
                    events, keep_alive=request.keep_alive, headers=reply.headers
                )
            else:
                await connection.send(
                    reply.status,
                    reply.payload,
                    keep_alive=request.keep_alive,
                    headers=reply.headers,
                )
            return request.keep_alive
        finally:
            stats.leave()

    def _control(self, request: Request) -> tuple[int, dict[str, Any]]:
        routes: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
            ("GET", "/_sim/stats"): self.simulator.stats_json,
            ("POST", "/_sim/reset"): self._reset,
            ("GET", "/_sim/health"): lambda: {"status": "ok"},
        }
        handler = routes.get((request.method, request.path))
        if handler is not None:
            return 200, handler()
        if any(path == request.path for _, path in routes) or request.path == MESSAGES_PATH:
            return 405, error_payload(405, f"Method {request.method} not allowed here.")
        return 404, error_payload(404, "Not found.")

    def _reset(self) -> dict[str, Any]:
        self.simulator.reset()
        return {"status": "reset"}


def report_internal_error(exc: BaseException) -> None:
    """Print where the simulator failed, not the exception's message (it may quote a request)."""
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    print(f"claude_sim: internal error {type(exc).__name__}\n{''.join(frames)}", file=sys.stderr)


# ------------------------------------------------------------------------ running


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_server(
    host: str,
    port: int,
    options: SimOptions,
    stop: asyncio.Event,
    on_ready: Callable[[str], None],
) -> None:
    """Serve until `stop` is set; `on_ready` gets the base URL once the port is open."""
    app = SimServer(Simulator(options))
    server = await asyncio.start_server(
        app.handle_connection, host, port, limit=MAX_HEAD_BYTES, backlog=LISTEN_BACKLOG
    )
    try:
        on_ready(base_url(host, server.sockets[0].getsockname()[1]))
        await stop.wait()
    finally:
        server.close()
        await app.close_connections()
        await server.wait_closed()


def url_from_banner(line: str) -> str:
    """The URL from the simulator's first line of output; ValueError if it is not that line.

    Launchers read the line to know the simulator is up and where (`--port 0`).
    """
    if not line.startswith(BANNER):
        raise ValueError(f"the Claude simulator did not start: {line!r}")
    return line[len(BANNER) :].strip()


def serve_in_thread(
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    latency_ms: int = 0,
    fault_rate: float = 0.0,
    rpm: int = 0,
    seed: int | None = None,
) -> tuple[str, Callable[[], None]]:
    """Start the simulator on a background thread; returns its base URL and a stop function."""
    options = SimOptions(latency_ms=latency_ms, fault_rate=fault_rate, rpm=rpm, seed=seed)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: concurrent.futures.Future[str] = concurrent.futures.Future()

    def run() -> None:
        try:
            loop.run_until_complete(run_server(host, port, options, stop, ready.set_result))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="claude_sim", daemon=True)
    thread.start()
    url = ready.result(timeout=STARTUP_TIMEOUT_SECONDS)

    def stop_server() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join()

    return url, stop_server


def fault_rate_arg(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.claude_sim", description="Simulate the Claude Messages API."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--port", type=non_negative_int, default=0, help="0 (default) picks a free port"
    )
    parser.add_argument(
        "--latency-ms", type=non_negative_int, default=0, help="default answer latency"
    )
    parser.add_argument(
        "--fault-rate", type=fault_rate_arg, default=0.0, help="share of random 429/529/500 answers"
    )
    parser.add_argument(
        "--rpm", type=non_negative_int, default=0, help="requests per minute, 0: unlimited"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    options = SimOptions(args.latency_ms, args.fault_rate, args.rpm, args.seed)

    def announce(url: str) -> None:
        print(f"{BANNER}{url}", flush=True)

    await run_server(args.host, args.port, options, stop, announce)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_main(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
