"""Typed values found in a text: emails, dates, phone numbers, identifiers, amounts, names.

`Found.of(text)` finds them all at once, in text order, so that an extract answer can copy
values of the right kind, as a model would. Each finder masks what it found (spaces of the
same length, so offsets stay put) before the next looks, so that the digits of a date, a
phone number or an invoice number are never taken for an amount.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

STOPWORD_TEXT = (
    "a about after all also an and any are as at be been but by can could did do does for "
    "from had has have he her his how i if in into is it its just may more most my no not "
    "of on or our out she so than that the their them then there these they this to too up "
    "us was we were what when which who will with would you your"
)
STOPWORDS = frozenset(STOPWORD_TEXT.split())

EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
MONTH_TEXT = "january february march april may june july august september october november december"
MONTH_NAMES = MONTH_TEXT.split()
MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
DAY_SUFFIX = r"(?:st|nd|rd|th)?"
ISO_DATE_RE = re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b")
DAY_MONTH_YEAR_RE = re.compile(
    rf"\b(?P<day>\d{{1,2}}){DAY_SUFFIX} (?P<month>{MONTH}),? (?P<year>\d{{4}})\b"
)
MONTH_DAY_YEAR_RE = re.compile(
    rf"\b(?P<month>{MONTH}) (?P<day>\d{{1,2}}){DAY_SUFFIX},? (?P<year>\d{{4}})\b"
)
PHONE_RE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{5,}\d(?!\w)")
PHONE_MIN_DIGITS = 7
# "INV-2041", "PO12345", "AB/77": capitals glued to digits.
IDENTIFIER_RE = re.compile(r"\b[A-Z]{2,}[A-Z0-9]*[-/#]?\d[\w-]*")
# "1,250.00", "40.50", "3"; not the tail of a word ("v2") or of another number.
NUMBER_RE = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
# "3 x VPS small at 12.00": a count, what was bought, its unit price.
LINE_ITEM_RE = re.compile(
    r"(?<![\w.])(?P<quantity>\d+)\s*[x\u00d7*]\s+(?P<description>[A-Za-z][^\d\n.;:,]*?)"
    r"\s+(?:at|@|for)\s+[€$£]?(?P<price>\d+(?:\.\d+)?)"
)
# Runs of capitalized words, allowing the small words inside names ("Bank of England").
CAPITALIZED_RE = re.compile(
    r"[A-Z][\w'&-]*(?: +(?:(?:of|de|da|del|van|von|der|la|le|&) +)?[A-Z][\w'&-]*)*"
)
WORD_BEFORE_RE = re.compile(r"([A-Za-z]+)\W*$")
SENTENCE_END_RE = re.compile(r"(?:^|[.!?:;\n])\W*$")
ORGANISATION_TEXT = (
    "inc ltd llc gmbh corp corporation company co group traders trading hosting systems "
    "solutions services labs bank university institute foundation agency partners industries "
    "technologies software media consulting studio studios plc ag sa bv"
)
ORGANISATION_WORDS = frozenset(ORGANISATION_TEXT.split())
VENUE_TEXT = (
    "centre center hall hotel arena stadium theatre theater park museum room auditorium "
    "building campus library club church square venue house gallery pavilion forum"
)
VENUE_WORDS = frozenset(VENUE_TEXT.split())
PERSON_MAX_WORDS = 3
# The kinds of string a property may ask for, and where Found keeps each (dates apart: they
# have two forms).
KIND_LISTS = {
    "email": "emails",
    "phone": "phones",
    "identifier": "identifiers",
    "organisation": "organisations",
    "venue": "venues",
    "title": "titles",
    "person": "persons",
}
PHRASE_KINDS = frozenset({"organisation", "venue", "title", "person"})


@dataclass(frozen=True)
class FoundDate:
    """A date as the text writes it, and the same day as YYYY-MM-DD."""

    text: str
    iso: str


@dataclass(frozen=True)
class LineItem:
    """One line of an order or invoice: "3 x VPS small at 12.00"."""

    text: str
    description: str


@dataclass(frozen=True)
class Phrase:
    """A run of capitalized words and the word before it (lowercase)."""

    text: str
    before: str

    @property
    def words(self) -> list[str]:
        return self.text.split()

    @property
    def is_organisation(self) -> bool:
        return any(word.lower().strip(".") in ORGANISATION_WORDS for word in self.words)

    @property
    def is_venue(self) -> bool:
        return any(word.lower() in VENUE_WORDS for word in self.words)

    @property
    def is_person(self) -> bool:
        """Two or three plain capitalized words ("Ana Costa"), not a company or a place."""
        words = self.words
        return (
            2 <= len(words) <= PERSON_MAX_WORDS
            and all(word.isalpha() and word.istitle() for word in words)
            and not (self.is_organisation or self.is_venue or self.before == "the")
        )


@dataclass(frozen=True)
class Found:
    """Everything typed that a text holds, each list in text order."""

    masked: str  # the text with emails, dates, phone numbers and identifiers blanked out
    emails: list[str]
    dates: list[FoundDate]
    phones: list[str]
    identifiers: list[str]
    numbers: list[str]
    phrases: list[Phrase]
    line_items: list[LineItem]

    @classmethod
    def of(cls, text: str) -> Found:
        masked, emails = _take(text, [EMAIL_RE])
        masked, dates = _take(masked, [ISO_DATE_RE, DAY_MONTH_YEAR_RE, MONTH_DAY_YEAR_RE])
        masked, phones = _take(masked, [PHONE_RE], keep=_is_phone)
        masked, identifiers = _take(masked, [IDENTIFIER_RE])
        return cls(
            masked=masked,
            emails=_texts(emails),
            dates=[d for d in map(_found_date, dates) if d is not None],
            phones=_texts(phones),
            identifiers=_texts(identifiers),
            numbers=NUMBER_RE.findall(masked),
            phrases=phrases(masked),
            line_items=[_line_item(m) for m in LINE_ITEM_RE.finditer(masked)],
        )

    def values(self, kind: str) -> list[str]:
        """The values of one of KIND_LISTS, in text order."""
        values: list[str] = getattr(self, KIND_LISTS[kind])
        return values

    @property
    def persons(self) -> list[str]:
        return _distinct(p.text for p in self.phrases if p.is_person)

    @property
    def organisations(self) -> list[str]:
        """Company-like phrases first, then other names met after "from", "by", "at", "with"."""
        named = [p for p in self.phrases if not p.is_person and not p.is_venue]
        cued = [p for p in named if p.before in ("from", "by", "at", "with") and len(p.words) > 1]
        return _distinct(p.text for p in [*(p for p in named if p.is_organisation), *cued])

    @property
    def venues(self) -> list[str]:
        return _distinct(p.text for p in self.phrases if p.is_venue)

    @property
    def titles(self) -> list[str]:
        """Names of several words that are not a person, a company or a place ("PyCon Lisbon")."""
        plain = (
            p
            for p in self.phrases
            if len(p.words) > 1 and not (p.is_person or p.is_organisation or p.is_venue)
        )
        return _distinct(p.text for p in plain)


def value_in(kind: str, text: str) -> str | None:
    """The value of `kind` in `text`, the words after a property's name ("customer: ACME Corp").

    There a name needs no company word or cue to count: the leading capitalized words will do.
    """
    if kind in PHRASE_KINDS:
        match = CAPITALIZED_RE.match(text)
        return match.group(0) if match else None
    values = Found.of(text).values(kind)
    return values[0] if values else None


def phrases(text: str) -> list[Phrase]:
    """The capitalized runs of `text`, without leading small words or a lone sentence opener."""
    found = []
    for match in CAPITALIZED_RE.finditer(text):
        words = match.group(0).split()
        dropped = []
        while words and words[0].lower() in STOPWORDS:
            dropped.append(words.pop(0))
        opens_sentence = not dropped and SENTENCE_END_RE.search(text[: match.start()]) is not None
        if not words or (len(words) == 1 and opens_sentence):
            continue  # "Join us", "Hi,", "Total due": capitalized only because a sentence starts
        before = dropped[-1] if dropped else _word_before(text[: match.start()])
        found.append(Phrase(" ".join(words), before.lower()))
    return found


def to_number(raw: str) -> float:
    return float(raw.replace(",", ""))


def _word_before(text: str) -> str:
    match = WORD_BEFORE_RE.search(text)
    return match.group(1) if match else ""


def _take(
    text: str, patterns: Iterable[re.Pattern[str]], keep: Callable[[str], bool] | None = None
) -> tuple[str, list[re.Match[str]]]:
    """The matches of the patterns in text order (a later overlapping one loses), and the text
    with them blanked out.
    """
    found = (m for p in patterns for m in p.finditer(text) if keep is None or keep(m.group(0)))
    kept: list[re.Match[str]] = []
    for match in sorted(found, key=lambda m: m.start()):
        if not kept or match.start() >= kept[-1].end():
            kept.append(match)
    for match in kept:
        text = text[: match.start()] + " " * len(match.group(0)) + text[match.end() :]
    return text, kept


def _texts(matches: Iterable[re.Match[str]]) -> list[str]:
    return [m.group(0).strip() for m in matches]


def _is_phone(candidate: str) -> bool:
    return sum(c.isdigit() for c in candidate) >= PHONE_MIN_DIGITS


def _found_date(match: re.Match[str]) -> FoundDate | None:
    month = match.group("month")
    number = int(month) if month.isdigit() else MONTH_NAMES.index(_month_name(month)) + 1
    try:
        day = datetime.date(int(match.group("year")), number, int(match.group("day")))
    except ValueError:
        return None  # "2026-13-45" looks like a date and is not one
    return FoundDate(match.group(0), day.isoformat())


def _month_name(abbreviation: str) -> str:
    prefix = abbreviation[:3].lower()
    return next(name for name in MONTH_NAMES if name.startswith(prefix))


def _line_item(match: re.Match[str]) -> LineItem:
    return LineItem(match.group(0), match.group("description").strip())


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
