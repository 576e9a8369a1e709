"""Token counts of one provider call and what they cost.

The four counts are named here once, as Usage's fields; the models' columns, the
API's schema, the selectors' sums and the Claude client's reading of a reply
all take their names from TOKEN_COUNTS.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from django.conf import settings

PER_MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class Usage:
    """As the Messages API reports it: input_tokens leaves out what the cache wrote or read."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def of(cls, source: Any) -> Usage:
        """The counts of anything that has them as attributes (a row, the SDK's usage);
        a count it lacks or leaves None is 0."""
        return cls(**{name: getattr(source, name, None) or 0 for name in TOKEN_COUNTS})

    def cost_usd(self, model: str) -> Decimal:
        """Cost from the price table; an unknown model costs 0 rather than failing a paid call."""
        prices = settings.AIJOBS_MODEL_PRICES.get(model)
        if prices is None:
            return Decimal(0)
        total = (
            self.input_tokens * prices["input"]
            + self.output_tokens * prices["output"]
            + self.cache_creation_input_tokens * prices["cache_write"]
            + self.cache_read_input_tokens * prices["cache_read"]
        )
        return (total / PER_MILLION).quantize(COST_QUANTUM)

    def as_fields(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TOKEN_COUNTS}


TOKEN_COUNTS = tuple(field.name for field in fields(Usage))
# What a call stores of its usage, and a job of its calls' usage: the counts and their cost.
TOKEN_FIELDS = (*TOKEN_COUNTS, "cost_usd")
