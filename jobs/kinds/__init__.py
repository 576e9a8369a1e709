"""The job kinds, found by name.

Each kind is one module holding everything about it (see JobKind): its models and prompt, and
what the rest of the platform derives from it: the web form's fields and examples, the pages'
labels and icons, the default model (`AIJOBS_MODEL_<NAME>` overrides it), the tests. Adding a
kind means copying a sibling module and its tests, then adding it to BUILTIN below; a deployment
can add its own kinds without touching this package through `AIJOBS_KIND_MODULES`.
This package is plain Python and Pydantic: no Django, so kinds test without a database.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from jobs.kinds import classify, extract, summarize
from jobs.kinds.common import Example

# A kind's name is a job's `kind` and part of setting names (AIJOBS_MODEL_<NAME>), URLs and CSS
# classes, so it is kept to what all of them take.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# The palette a kind picks its accent from (webapp's CSS defines one class per tone).
TONES = ("indigo", "orange", "teal", "rose", "sky", "violet", "slate")
# Shown for a kind whose module gives no ICON: a page with lines of text.
DEFAULT_ICON = '<path d="M6.5 3.5h8l4 4v13h-12z"/><path d="M14.5 3.5v4h4M9 12h6M9 16h6"/>'


@runtime_checkable
class JobKind(Protocol):
    """The contract of a kind module (modules satisfy it structurally).

    Optional: ICON (SVG path markup for a 24x24 stroke icon), TONE (one of TONES), FIELD_HINTS
    ({Input field alias: FieldHint}), result_columns(params) (a batch's CSV result columns,
    {name: read it from a result}; by default one per Output field).
    """

    NAME: str  # the `kind` of a job
    BLURB: str  # one line for a person choosing a kind
    DEFAULT_MODEL: str  # used unless the job or AIJOBS_MODEL_<NAME> names another
    MAX_TOKENS: int  # the model's output budget per call
    SYSTEM_PROMPT: str  # fixed per kind, so the API can cache it
    EXAMPLES: tuple[Example, ...]  # at least one, valid for Input
    Input: type[BaseModel]  # validates what the user submits; `text` is the document
    Output: type[BaseModel]  # the shape of the answer; output_model narrows it per job

    def build_prompt(self, input: Any) -> str:
        """The user message for an Input: parameters, then the text fenced as data."""
        ...

    def output_model(self, input: Any) -> type[BaseModel]:
        """The model the answer for this Input must satisfy (sent as `output_format`)."""
        ...

    def result_from(self, output: Any) -> dict[str, Any]:
        """The JSON-able result stored for a validated answer."""
        ...


BUILTIN: tuple[ModuleType, ...] = (summarize, classify, extract)
KINDS: dict[str, ModuleType] = {}


class UnknownKind(KeyError):
    """No kind has this name; a KeyError, so `except KeyError` works too."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown job kind {self.name!r}; known kinds: {', '.join(names())}"


class InvalidKind(TypeError):
    """A module that does not keep the JobKind contract, refused before it is registered."""


def register(module: ModuleType) -> ModuleType:
    """Add a kind module to the registry, after checking what the rest of the code relies on."""
    name = getattr(module, "NAME", None)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidKind(f"{module.__name__}: NAME must match {NAME_PATTERN.pattern}")
    if not isinstance(module, JobKind):
        raise InvalidKind(f"{module.__name__} lacks part of the JobKind contract")
    if getattr(module, "TONE", TONES[-1]) not in TONES:
        raise InvalidKind(f"{module.__name__}: TONE must be one of {', '.join(TONES)}")
    if not module.EXAMPLES or "text" not in module.Input.model_fields:
        raise InvalidKind(f"{module.__name__} needs EXAMPLES and a `text` field in Input")
    if KINDS.get(name, module) is not module:
        raise InvalidKind(f"{module.__name__}: the kind {name!r} is registered already")
    KINDS[name] = module
    return module


def unregister(name: str) -> None:
    """Drop a kind (tests that register a throwaway one put the registry back this way)."""
    KINDS.pop(name, None)


def load(module_paths: Iterable[str]) -> None:
    """Register the kind modules named by dotted path (AIJOBS_KIND_MODULES)."""
    for path in module_paths:
        register(importlib.import_module(path))


def names() -> tuple[str, ...]:
    """The registered kinds' names, in registration order (the order pages list them in)."""
    return tuple(KINDS)


def get_kind(name: str) -> ModuleType:
    """The kind module called `name`, or UnknownKind."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(name) from None


def label(name: str) -> str:
    """The kind's name as a heading shows it."""
    return name.replace("_", " ").capitalize()


for _module in BUILTIN:
    register(_module)
