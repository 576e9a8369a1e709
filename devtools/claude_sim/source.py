"""Reading the prompt: message texts, the fenced document, and what a schema walk asks of it."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence
from typing import Any

SUMMARY_SENTENCES = 2
POINT_WORDS = 15
FILLER_WORDS = 3
NAMED_VALUE_WORDS = 6
# Two words are "the same" when they share this many leading characters (politics/political).
STEM_CHARS = 5
MIN_STEM_CHARS = 4
STOPWORD_TEXT = (
    "a about after all also an and any are as at be been but by can could did do does for "
    "from had has have he her his how i if in into is it its just may more most my no not "
    "of on or our out she so than that the their them then there these they this to too up "
    "us was we were what when which who will with would you your"
)
STOPWORDS = frozenset(STOPWORD_TEXT.split())

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
