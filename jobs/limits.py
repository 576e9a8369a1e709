"""Per-user limits: submission rate, jobs running at once, and a spending budget per period.

The budget is enforced with reservations: before each call the worst case it
could cost is reserved with a conditional UPDATE on the user's ledger row, so
concurrent jobs cannot together spend past the budget; the call's real cost
replaces the reservation when it ends.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import redis
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from jobs.errors import BudgetExceeded, SubmissionRateLimited
from jobs.models import BudgetLedger, BudgetPeriod, UserLimits
from jobs.ratelimit import Limit, Limiter
from jobs.usage import Usage

log = logging.getLogger(__name__)

# Limits change rarely and are read on every claim and submission: a short
# per-process cache keeps that off the database; edits apply within this time.
CACHE_SECONDS = 10.0
# Characters per token when estimating a prompt before sending it: low on
# purpose, so budget reservations and rate limits err on the safe side.
CHARS_PER_TOKEN_ESTIMATE = 3


@dataclass(frozen=True)
class EffectiveLimits:
    submissions_per_minute: int
    max_running: int
    budget_usd: Decimal | None
    budget_period: str


_cache: dict[int, tuple[float, EffectiveLimits]] = {}


def limits_for(user_id: int) -> EffectiveLimits:
    cached = _cache.get(user_id)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    limits = _load(user_id)
    _cache[user_id] = (time.monotonic() + CACHE_SECONDS, limits)
    return limits


def _load(user_id: int) -> EffectiveLimits:
    row = UserLimits.objects.filter(user_id=user_id).first()
    default_budget = settings.AIJOBS_DEFAULT_BUDGET_USD

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return EffectiveLimits(
        submissions_per_minute=pick(
            row and row.submissions_per_minute, settings.AIJOBS_SUBMISSIONS_PER_MINUTE
        ),
        max_running=pick(row and row.max_running, settings.AIJOBS_MAX_RUNNING_PER_USER),
        budget_usd=row.budget_usd if row and row.budget_usd is not None else default_budget,
        budget_period=row.budget_period if row else BudgetPeriod.MONTH,
    )


def check_submission_rate(user_id: int) -> None:
    """Count one submission, or raise SubmissionRateLimited with the seconds to wait."""
    per_minute = limits_for(user_id).submissions_per_minute
    if per_minute <= 0:
        return
    limiter = Limiter(f"user:{user_id}:submit", [Limit("jobs", per_minute, burst=per_minute)])
    try:
        wait = limiter.acquire({"jobs": 1})
    except redis.RedisError as exc:
        # Accepting a job matters more than pacing one user: with Redis down the
        # job is stored and published by the reaper once Redis is back.
        log.warning("submission rate not checked, Redis unavailable: %s", exc)
        return
    if wait > 0:
        raise SubmissionRateLimited(
            f"at most {per_minute} jobs a minute; try again in {wait:.0f} s", retry_after=wait
        )


def period_start(period: str, today: date) -> date:
    return today.replace(day=1) if period == BudgetPeriod.MONTH else today


def _ledger(user_id: int, limits: EffectiveLimits) -> BudgetLedger:
    start = period_start(limits.budget_period, timezone.now().date())
    ledger, _ = BudgetLedger.objects.get_or_create(user_id=user_id, period_start=start)
    return ledger


def budget_reserve(*, user_id: int, amount: Decimal) -> BudgetLedger | None:
    """Hold `amount` against the user's budget: the ledger held on, None without a budget.

    Raises BudgetExceeded when settled spending plus reservations would pass the budget.
    """
    limits = limits_for(user_id)
    if limits.budget_usd is None:
        return None
    ledger = _ledger(user_id, limits)
    room = F("spent_usd") + F("reserved_usd") + amount
    held = (
        BudgetLedger.objects.filter(pk=ledger.pk)
        .alias(total=room)
        .filter(total__lte=limits.budget_usd)
    )
    if held.update(reserved_usd=F("reserved_usd") + amount) == 0:
        raise budget_exceeded(user_id)
    return ledger


def budget_settle(*, ledger_id: int, reserved: Decimal, cost: Decimal) -> None:
    BudgetLedger.objects.filter(pk=ledger_id).update(
        reserved_usd=F("reserved_usd") - reserved, spent_usd=F("spent_usd") + cost
    )


def input_tokens_estimate(*, system: str, prompt: str) -> int:
    """The input tokens a call with this system prompt and user message is taken to use."""
    return (len(system) + len(prompt)) // CHARS_PER_TOKEN_ESTIMATE


def reservation_usd(*, model: str, input_tokens: int, max_tokens: int) -> Decimal:
    """What a call reserves of the budget before it is sent: its worst case."""
    return Usage(input_tokens=input_tokens, output_tokens=max_tokens).cost_usd(model)


def budget_left(user_id: int) -> Decimal | None:
    """What the user may still spend this period (settled and reserved taken off), None
    without a budget."""
    limits = limits_for(user_id)
    if limits.budget_usd is None:
        return None
    ledger = _ledger(user_id, limits)
    return limits.budget_usd - ledger.spent_usd - ledger.reserved_usd


def budget_exceeded(user_id: int, detail: str = "is spent") -> BudgetExceeded:
    limits = limits_for(user_id)
    return BudgetExceeded(f"the budget of ${limits.budget_usd} per {limits.budget_period} {detail}")


def check_budget_left(user_id: int) -> None:
    """Refuse new work while the budget of the current period is spent."""
    left = budget_left(user_id)
    if left is not None and left <= 0:
        raise budget_exceeded(user_id)
