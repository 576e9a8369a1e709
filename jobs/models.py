"""Jobs, the provider calls made for them, and API tokens."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
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
# Waiting for a worker slot or in one (a retrying job waits for neither).
LIVE = (Status.QUEUED, Status.RUNNING)
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


class WebhookFilter(models.TextChoices):
    """The events a job or batch sends to its webhook (Replicate's webhook_events_filter)."""

    START = "start"
    COMPLETED = "completed"


def default_webhook_events() -> list[str]:
    return [WebhookFilter.COMPLETED]


class WebhookTarget(models.Model):
    """Where a job's or a batch's webhooks go, and which of its events are sent."""

    # Empty for none. Checked against the address rules at submission and at every delivery.
    webhook = models.CharField(max_length=2000, blank=True)
    webhook_events = ArrayField(
        models.CharField(max_length=16, choices=WebhookFilter.choices),
        default=default_webhook_events,
        blank=True,
    )

    class Meta:
        abstract = True


class BatchStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELED = "canceled"


class Mode(models.TextChoices):
    STANDARD = "standard"
    # Message Batches at half price: refused until it exists (a later issue).
    ECONOMY = "economy"


class Batch(WebhookTarget):
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


class Job(TokenCounts, WebhookTarget):
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
            # The dispatcher's question before it applies AIJOBS_BATCH_MAX_IN_FLIGHT: is any
            # job submitted on its own waiting or running? Answered from the few that are.
            models.Index(
                fields=["status"],
                name="job_single_live",
                condition=Q(batch__isnull=True, status__in=LIVE),
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


class WebhookSecret(models.Model):
    """A user's webhook signing secret (`whsec_` and base64, Standard Webhooks).

    After a rotation the previous secret signs alongside the new one until
    `previous_expires_at`, so receivers can move to the new one without missing a message.
    Stored as is: signing needs the secret itself, not a digest.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret"
    )
    secret = models.CharField(max_length=64)
    previous = models.CharField(max_length=64, blank=True)
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.user}"


class WebhookEvent(models.TextChoices):
    JOB_STARTED = "job.started"
    JOB_COMPLETED = "job.completed"
    BATCH_STARTED = "batch.started"
    BATCH_COMPLETED = "batch.completed"

    @property
    def of_batch(self) -> bool:
        """Whether the event is a batch's (its message names the batch, not a job)."""
        return self in (WebhookEvent.BATCH_STARTED, WebhookEvent.BATCH_COMPLETED)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Refused by the receiver for good, or still failing when its retries ran out.
    FAILED = "failed"


class WebhookMessage(models.Model):
    """One event for one webhook: the outbox row, written in the transaction of the state
    change it reports, and delivered at least once from it.

    Its id is the `webhook-id` of every try. It is derived from the job or batch and the
    event type (jobs.webhooks), so a state change that repeats (a claim after a release)
    cannot add a second message, and the code that made the change knows the id to send.
    """

    id = models.CharField(primary_key=True, max_length=40)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_messages"
    )
    type = models.CharField(max_length=32, choices=WebhookEvent.choices)
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_messages"
    )
    batch = models.ForeignKey(
        Batch, on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_messages"
    )
    url = models.CharField(max_length=2000)
    # The body, fixed at the first try so that every try sends the same bytes.
    payload = OrderedJSONField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    # No try is scheduled after this; a redeliver moves it.
    retry_until = models.DateTimeField()
    # When its delivery task was last handed to the broker; a lapse (the message was lost)
    # lets the sweep hand it over again.
    handed_over_at = models.DateTimeField(null=True, blank=True)
    # Held by the try in progress, so two tasks for one message never send it at once.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="webhook_owner_newest"),
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_pending",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at delivering a message: the delivery log."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="tries")
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # None when no answer came (refused address, connection error, timeout).
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    # The first bytes of the answer's body, as text.
    response_head = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "attempt"], name="one_try_per_attempt"),
        ]
        ordering = ["attempt"]

    def __str__(self) -> str:
        return f"{self.message_id} try {self.attempt}: {self.http_status or self.error}"
