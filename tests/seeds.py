"""One seed per test session for every random choice a test makes, so a failure can be replayed.

The seed comes from AIJOBS_TEST_SEED, or is drawn fresh; either way the session
prints it in its header and in every failure's report (tests/conftest.py).
"""

from __future__ import annotations

import os
import random

SEED_VARIABLE = "AIJOBS_TEST_SEED"


def session_seed() -> int:
    chosen = os.environ.get(SEED_VARIABLE, "").strip()
    if not chosen:
        return random.SystemRandom().randrange(2**32)
    try:
        return int(chosen)
    except ValueError:
        raise SystemExit(f"{SEED_VARIABLE} must be an integer, got {chosen!r}") from None


SEED = session_seed()


def replay_hint() -> str:
    return f"random seed {SEED}: replay with {SEED_VARIABLE}={SEED}"


def rng_for(test_id: str) -> random.Random:
    """A generator of the test's own: its draws depend on the seed and the test, not on
    which tests ran before it (strings seed the same on every machine and process)."""
    return random.Random(f"{SEED}:{test_id}")
