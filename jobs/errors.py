"""Errors the services raise; the web layer maps each to one HTTP status."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code: str = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(ServiceError):
    code = "invalid_input"


class IdempotencyKeyReused(ServiceError):
    code = "idempotency_key_reused"


class IdempotencyKeyInFlight(ServiceError):
    code = "idempotency_key_in_flight"


class JobAlreadyFinished(ServiceError):
    code = "job_finished"


class JobNotFinished(ServiceError):
    code = "job_not_finished"


class BatchAlreadyFinished(ServiceError):
    code = "batch_finished"


class DeliveryPending(ServiceError):
    """A redeliver of a webhook message whose delivery is still going on."""

    code = "delivery_pending"


class SubmissionRateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, details={"retry_after": round(retry_after, 1)})
        self.retry_after = retry_after


class BudgetExceeded(ServiceError):
    code = "budget_exceeded"
