"""Token counts of one provider call and what they cost."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

PER_MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

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
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }
