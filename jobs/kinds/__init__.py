"""The job kinds, found by name.

Each kind is one small module (see JobKind for what it provides). Adding a kind means copying a
sibling module and its tests, then adding one line to KINDS below; nothing else changes.
This package is plain Python and Pydantic: no Django, so kinds test without a database.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from jobs.kinds import classify, extract, summarize


@runtime_checkable
class JobKind(Protocol):
    """The contract of a kind module (modules satisfy it structurally)."""

    NAME: str  # the `kind` of a job
    MAX_TOKENS: int  # the model's output budget per call
    SYSTEM_PROMPT: str  # fixed per kind, so the API can cache it
    Input: type[BaseModel]  # validates what the user submits
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


KINDS: dict[str, ModuleType] = {
    summarize.NAME: summarize,
    classify.NAME: classify,
    extract.NAME: extract,
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


class UnknownKind(KeyError):
    """No kind has this name; a KeyError, so `except KeyError` works too."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown job kind {self.name!r}; known kinds: {', '.join(KIND_NAMES)}"


def get_kind(name: str) -> ModuleType:
    """The kind module called `name`, or UnknownKind."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(name) from None
