"""Reading the prompt: message texts, the fenced document, and what a schema walk asks of it."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any

from devtools.claude_sim.values import NUMBER_RE, STOPWORDS, Found, FoundDate, LineItem, to_number

SUMMARY_SENTENCES = 2
POINT_WORDS = 15
FILLER_WORDS = 3
NAMED_VALUE_WORDS = 6
# Two words are "the same" when they share this many leading characters (politics/political).
STEM_CHARS = 5
MIN_STEM_CHARS = 4

WORD_RE = re.compile(r"[A-Za-z0-9][\w'-]*")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
NAME_SEPARATOR_RE = re.compile(r"[\s_-]+")
# Where a value stated after a name ends: a clause break; a dot inside a number is no break.
CLAUSE_END_RE = re.compile(r"[,;:]|[.!?](?!\d)|\n")
SENTENCE_END_RE = re.compile(r"[.!?](?!\d)|\n")
# How far after a mention ("Total due: 40.50") its number may be.
NUMBER_WINDOW_CHARS = 40
COUNT_BEFORE_RE = re.compile(r"(?<![\w.,])(\d+)\s+$")
NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "nor"})
# Words that make a property a yes/no question and are not what it asks about.
BOOLEAN_PREFIXES = frozenset({"is", "has", "was", "can", "should", "will", "does", "did"})
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

    def __init__(self, document: str, prompt: str, subject: str | None = None) -> None:
        self.document = document
        # What the text is about when it is one part of a larger one (a line item's description).
        self.subject = subject
        self.limit = word_limit(prompt)
        self.sentences = split_sentences(document)
        self.words = WORD_RE.findall(document)
        lowered = [w.lower() for w in self.words]
        self.counts = collections.Counter(lowered)
        self.content_words = [w for w in lowered if w not in STOPWORDS and not w.isdigit()]
        self._by_prefix: dict[str, list[str]] = collections.defaultdict(list)
        for word in self.counts:
            self._by_prefix[word[:MIN_STEM_CHARS]].append(word)
        self._word_cursor = 0
        self._taken: collections.Counter[str] = collections.Counter()

    @cached_property
    def found(self) -> Found:
        # Only extract-shaped answers ask, so summaries and labels do not pay for the search.
        return Found.of(self.document)

    def scoped(self, item: LineItem) -> Source:
        """A source for one line item: its own text, about its description."""
        return Source(item.text, "", subject=item.description)

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
        mention = mention_pattern(name)
        if mention is None:
            return None
        match = re.search(rf"{mention}\s*(?:is|was|:|=|-)?\s*", self.document, re.I)
        if match is None:
            return None
        value = CLAUSE_END_RE.split(self.document[match.end() :], maxsplit=1)[0].strip()
        return clip_words(value, NAMED_VALUE_WORDS) if value else None

    def number_after(self, name: str, integer: bool) -> float | None:
        """The first number a few words after a mention of `name` ("Total due: 40.50"), or for
        a whole number the one just before it ("3 units").
        """
        mention = mention_pattern(name)
        if mention is None:
            return None
        masked = self.found.masked
        for match in re.finditer(mention, masked, re.I):
            count = COUNT_BEFORE_RE.search(masked[: match.start()]) if integer else None
            if count is not None:
                return float(count.group(1))
            window = masked[match.end() : match.end() + NUMBER_WINDOW_CHARS]
            window = SENTENCE_END_RE.split(window, maxsplit=1)[0]
            found = _first_number(NUMBER_RE.findall(window), integer)
            if found is not None:
                return found
        return None

    def next_number(self, integer: bool, amount: bool = False) -> float | None:
        """The next number of the text: integers only for an integer field; for an amount, not
        0 and decimals first (40.50 rather than the 30 of "30 days").
        """
        pool = [n for n in self.found.numbers if not integer or "." not in n]
        if amount:
            pool = [n for n in pool if to_number(n)]
            pool = [n for n in pool if "." in n] + [n for n in pool if "." not in n]
        # Each pool has its own cursor: a quantity taking the first whole number must not
        # make the unit price skip the first amount.
        taken = self._next(f"number integer={integer} amount={amount}", pool)
        return None if taken is None else to_number(taken)

    def take(self, kind: str) -> str | None:
        """The next value of `kind` in the text, so that sibling fields get different ones."""
        return self._next(kind, self.found.values(kind))

    def take_date(self) -> FoundDate | None:
        return self._next("date", self.found.dates)

    def _next(self, kind: str, values: Sequence[Any]) -> Any:
        if not values:
            return None
        value = values[self._taken[kind] % len(values)]
        self._taken[kind] += 1
        return value

    def affirms(self, words: Sequence[str]) -> bool:
        """Whether one sentence says all of `words` ("streamed online"), without a negation."""
        wanted = [w for w in words if w not in STOPWORDS and w not in BOOLEAN_PREFIXES]
        if not wanted:
            return False
        for sentence in self.sentences:
            said = [w.lower() for w in WORD_RE.findall(sentence)]
            negated = any(w in NEGATIONS or w.endswith("n't") for w in said)
            if not negated and all(any(stem_matches(w, s) for s in said) for w in wanted):
                return True
        return False


def mention_pattern(name: str) -> str | None:
    """A regex for `name` as text writes it: "unit_price" matches "unit price", "Unit-Price"."""
    parts = [re.escape(part) for part in NAME_SEPARATOR_RE.split(name) if part]
    return rf"\b{NAME_SEPARATOR_RE.pattern.join(parts)}\b" if parts else None


def _first_number(candidates: Iterable[str], integer: bool) -> float | None:
    for candidate in candidates:
        if not integer or "." not in candidate:
            return to_number(candidate)
    return None
