"""What every job kind shares: the checked text field, the fence that keeps user text data, and
the shapes in which a kind describes its examples and form fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

NUL = "\x00"

# The tags that frame the parts of a prompt. Any of them inside user-supplied text is defused, so
# the text can neither close its own fence early nor open something that looks like ours.
FENCE_TAGS = ("document", "instructions")
_FENCE_TAG = re.compile(rf"<(?=\s*/?\s*(?:{'|'.join(FENCE_TAGS)})\b)", re.IGNORECASE)


def reject_nul(value: str) -> str:
    """Refuse NUL: PostgreSQL cannot store it in text or JSON, and no real text needs it."""
    if NUL in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters (\\x00)")
    return value


def require_content(value: str) -> str:
    """Refuse a string that is empty or only whitespace (it is kept as given otherwise)."""
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty or only whitespace")
    return value


# The user's text as every kind takes it.
Text = Annotated[str, AfterValidator(reject_nul), AfterValidator(require_content)]


def fence(text: str, tag: str = "document") -> str:
    """`text` between `<tag>` and `</tag>` lines, with every fence tag inside it defused.

    `tag` is one of FENCE_TAGS. A defused tag reads `&lt;/document>`: still legible to the model,
    but no longer the fence.
    """
    defused = _FENCE_TAG.sub("&lt;", text)
    return f"<{tag}>\n{defused}\n</{tag}>"


@dataclass(frozen=True)
class Example:
    """A ready input for a kind and an answer it accepts: offered on the web form (the input),
    used by the tests (both) and the bench (the input)."""

    name: str
    input: dict[str, Any]
    output: dict[str, Any]


@dataclass(frozen=True)
class FieldHint:
    """How the web form shows one Input field; what it leaves out comes from the field itself."""

    label: str | None = None
    help: str | None = None
    placeholder: str | None = None
    rows: int | None = None
    # Pydantic's wording for an error type, rewritten for a person filling in the form.
    messages: dict[str, str] = field(default_factory=dict)
