"""Jobs, the provider calls made for them, and API tokens."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from jobs.fields import OrderedJSONField
from jobs.usage import TOKEN_COUNTS, TOKEN_FIELDS


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

COST_FIELD = {"max_digits": 14, "decimal_places": 6, "default": Decimal(0)}


class TokenCounts(models.Model):
    """The token counts (a column per Usage count, added below) and their cost, shared by
    calls and job totals."""

    cost_usd = models.DecimalField(**COST_FIELD)

    class Meta:
        abstract = True


for _count in TOKEN_COUNTS:
    TokenCounts.add_to_class(_count, models.PositiveIntegerField(default=0))


class BatchStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELED = "canceled"


class Mode(models.TextChoices):
    STANDARD = "standard"
    # Message Batches at half price: refused until it exists (a later issue).
    ECONOMY = "economy"


class Batch(models.Model):
    """Many items of one kind with shared parameters, submitted at once; each item is a Job."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches"
    )
    kind = models.CharField(max_length=32)
    model = models.CharField(max_length=64)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.STANDARD)
    # The kind's input fields other than `text`, shared by every item (an item may override).
    params = OrderedJSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.QUEUED
    )
    total = models.PositiveIntegerField()
    # NULL, not "", for "no key": the unique constraint must ignore keyless batches.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True)
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="batch_idempotency_key_per_owner",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="batch_owner_newest"),
            # The batches the dispatcher looks at every round: few, however many are kept.
            models.Index(
                fields=["owner", "created_at"],
                name="batch_live",
                condition=Q(status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} batch {self.id} ({self.status})"


class Job(TokenCounts):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    model = models.CharField(max_length=64)
    input = OrderedJSONField()
    result = OrderedJSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # Incremented by every claim; finishing names it, so a worker whose lease
    # lapsed and was reclaimed can no longer write a result (fencing).
    attempts = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Claims that took over a lapsed lease: a job that keeps killing its
    # worker is failed after a few instead of crashing workers forever.
    lost_leases = models.PositiveSmallIntegerField(default=0)
    # When its message was last handed to the broker; null until the first
    # publish succeeds, which is how the reaper finds jobs whose publish failed.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # NULL, not "", for "no key": the unique constraint must ignore keyless jobs.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    # The finished job this one runs again, with the same kind, input and model. Few jobs
    # have one, so its index (below) leaves out the rest and costs a submission nothing.
    rerun_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reruns",
        db_index=False,
    )
    # An item of a batch: its id there (unique in the batch) and its place (1-based) in it.
    batch = models.ForeignKey(
        Batch, on_delete=models.CASCADE, null=True, blank=True, related_name="jobs", db_index=False
    )
    custom_id = models.CharField(max_length=64, blank=True)
    position = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_per_owner",
            ),
            models.UniqueConstraint(
                fields=["batch", "custom_id"],
                condition=Q(batch__isnull=False),
                name="job_custom_id_per_batch",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="job_owner_newest"),
            models.Index(fields=["status", "lease_expires_at"], name="job_status_lease"),
            models.Index(fields=["-started_at"], name="job_last_claimed"),
            models.Index(
                fields=["rerun_of"], name="job_rerun_of", condition=Q(rerun_of__isnull=False)
            ),
            # A batch's counts and usage per state, read from this index alone (an
            # index-only scan): the progress poll never touches the jobs' rows.
            models.Index(
                fields=["batch", "status"],
                name="job_batch_status",
                include=list(TOKEN_FIELDS),
                condition=Q(batch__isnull=False),
            ),
            # A batch's items in submission order (results).
            models.Index(
                fields=["batch", "position"],
                name="job_batch_position",
                condition=Q(batch__isnull=False),
            ),
            # The dispatcher's two questions per batch, each answered from a small index
            # however large the batch: its next items to publish, and how many are out.
            models.Index(
                fields=["batch", "position"],
                name="job_batch_unpublished",
                condition=Q(batch__isnull=False, enqueued_at__isnull=True, status__in=UNFINISHED),
            ),
            models.Index(
                fields=["batch"],
                name="job_batch_in_flight",
                condition=Q(batch__isnull=False, enqueued_at__isnull=False, status__in=UNFINISHED),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class Outcome(models.TextChoices):
    # Written before the request goes out, so a worker killed mid-call leaves a trace.
    PENDING = "pending"
    # A pending call whose worker died: it may have been billed; counted at its reservation.
    UNKNOWN = "unknown"
    OK = "ok"
    INVALID_OUTPUT = "invalid_output"
    RETRYABLE_ERROR = "retryable_error"
    PERMANENT_ERROR = "permanent_error"


class ProviderCall(TokenCounts):
    """One request to the model API: every paid call gets a row, failures included."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="calls")
    attempt = models.PositiveIntegerField()
    # 0 for the answer, 1 for the repair round of the same attempt.
    seq = models.PositiveSmallIntegerField(default=0)
    outcome = models.CharField(max_length=32, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    provider_request_id = models.CharField(max_length=128, blank=True)
    model = models.CharField(max_length=64)
    stop_reason = models.CharField(max_length=32, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=255, blank=True)
    # The worst-case cost held against the owner's budget while the call is pending.
    reserved_usd = models.DecimalField(**COST_FIELD)
    budget_ledger = models.ForeignKey(
        "BudgetLedger", on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "attempt", "seq"], name="one_call_per_slot"),
        ]
        indexes = [
            models.Index(fields=["outcome"], name="call_pending", condition=Q(outcome="pending")),
        ]
        ordering = ["attempt", "seq"]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.attempt}.{self.seq} {self.outcome}"


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters, shown in lists so a user can tell tokens apart.
    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"


class BudgetPeriod(models.TextChoices):
    DAY = "day"
    MONTH = "month"


class UserLimits(models.Model):
    """Per-user limits; an empty field means the platform default from settings."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limits"
    )
    submissions_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs a user may submit per minute; 0 means no limit."
    )
    max_running = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Jobs of this user running at once; the rest wait their turn.",
    )
    budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Spending allowed per period in USD; empty means the platform default.",
    )
    budget_period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )

    class Meta:
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of {self.user}"


class BudgetLedger(models.Model):
    """Spending of one user in one budget period: settled costs plus reservations in flight."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ledgers"
    )
    period_start = models.DateField()
    spent_usd = models.DecimalField(**COST_FIELD)
    reserved_usd = models.DecimalField(**COST_FIELD)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "period_start"], name="one_ledger_per_period"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.user} from {self.period_start}: {self.spent_usd} + {self.reserved_usd} reserved"
        )
