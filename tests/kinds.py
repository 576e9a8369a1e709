"""The registered kinds as tests use them: parametrization, examples, a name that is no kind.

Tests of views, the API, workers and the browser run once per registered kind and feed each its
own examples, so a new kind module is tested everywhere without editing any test.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobs import kinds

# Spaces never match kinds.NAME_PATTERN, so this can never become a kind.
UNKNOWN_KIND = "no such kind"

every_kind = pytest.mark.parametrize("kind", kinds.names())


def example_input(kind: str, **changes: Any) -> dict[str, Any]:
    """The kind's first example input, with `changes` applied (e.g. another text)."""
    return {**kinds.get_kind(kind).EXAMPLES[0].input, **changes}


def example_output(kind: str) -> dict[str, Any]:
    """A stored result the kind's first example input accepts."""
    return kinds.get_kind(kind).EXAMPLES[0].output


def stored_input(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The input as a job stores it: validated by the kind, its defaults filled in."""
    return kinds.get_kind(kind).Input.model_validate(raw).model_dump(mode="json", by_alias=True)
