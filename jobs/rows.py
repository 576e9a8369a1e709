"""Every hand-written SQL statement, each shown in its function's docstring.

The status read, the claim and the settle of a call run once per request or
several times per job. Compiling them through the ORM cost more CPU than
everything else they do, and the claim needs `UPDATE ... RETURNING`, which the
ORM cannot write. Their SQL is built once from the models (table and column
names, the status values) and the docstrings show what that builds; their rows
become Job instances exactly as the ORM would build them (the fields' own
database converters applied). In the docstrings, `<columns of jobs_job>` stands
for every column of the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

from django.db import connection, connections
from django.db.models.expressions import Col

from jobs.models import (
    UNFINISHED,
    Batch,
    BatchStatus,
    DeliveryStatus,
    Job,
    Outcome,
    ProviderCall,
    Status,
    UserLimits,
    WebhookEvent,
    WebhookFilter,
    WebhookMessage,
)
from jobs.usage import TOKEN_FIELDS

# How a call ended, as the worker reports it; the settle writes these and the usage.
CALL_REPORT_COLUMNS = (
    "outcome",
    "provider_request_id",
    "stop_reason",
    "latency_ms",
    "http_status",
    "error_code",
    "error_message",
)


@dataclass(frozen=True)
class JobColumns:
    """Every column of Job for a SELECT or RETURNING list, and how to turn a row into a Job."""

    sql: str
    attnames: list[str]
    converters: list[tuple[int, Callable[..., Any], Col]]

    def job(self, row: Sequence[Any]) -> Job:
        values = list(row)
        for index, convert, column in self.converters:
            values[index] = convert(values[index], column, connection)
        return Job.from_db(connection.alias, self.attnames, values)


@cache
def job_columns() -> JobColumns:
    fields = Job._meta.concrete_fields
    return JobColumns(
        sql=", ".join(connection.ops.quote_name(field.column) for field in fields),
        attnames=[field.attname for field in fields],
        converters=[
            (index, convert, field.get_col(Job._meta.db_table))
            for index, field in enumerate(fields)
            for convert in field.get_db_converters(connection)
        ],
    )


def _fetch_job(sql: str, params: Sequence[Any] | dict[str, Any]) -> Job | None:
    """The Job in the first row `sql` returns, its columns listed as `job_columns().sql`."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else job_columns().job(row)


def _literal(value: str) -> str:
    """One of the models' own choice values as an SQL string literal (never user input)."""
    return "'" + value.replace("'", "''") + "'"


RUNNING, PENDING = _literal(Status.RUNNING), _literal(Outcome.PENDING)


# --- webhook messages, added by the statement that makes the change they report -------------

_MESSAGE_COLUMNS = (
    "id, owner_id, type, job_id, batch_id, url, status, attempts, created_at, next_attempt_at,"
    " retry_until, handed_over_at"
)


def _message_insert(
    *,
    source: str,
    event: WebhookEvent,
    wanted: WebhookFilter,
    message_id: str = "%(message_id)s",
    join: str = "",
    condition: str = "",
) -> str:
    """An INSERT of the `event` message for each row of `source` (a job or batch that changed)
    with a webhook that wants it, for a CTE; an id already there adds nothing, so a change
    that repeats (a claim after a release) sends nothing twice. `handed_over_at` is set from
    the start: its delivery task is sent at commit, and the sweep resends it if that fails."""
    subject = ("NULL", f"{source}.id") if event.of_batch else (f"{source}.id", "NULL")
    return f"""INSERT INTO {WebhookMessage._meta.db_table} ({_MESSAGE_COLUMNS})
            SELECT {message_id}, {source}.owner_id, {_literal(event)}, {subject[0]}, {subject[1]},
                {source}.webhook, {_literal(DeliveryStatus.PENDING)}, 0, %(now)s, %(now)s,
                %(retry_until)s, %(now)s
            FROM {source}{join}
            WHERE {condition}{source}.webhook <> ''
                AND {_literal(wanted)} = ANY({source}.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id"""


# --- the status read -----------------------------------------------------------------------


def job_of_owner(*, job_id: UUID, owner_id: int) -> Job | None:
    """The owner's job, or None::

    SELECT <columns of jobs_job> FROM jobs_job WHERE id = %s AND owner_id = %s
    """
    return _fetch_job(_job_of_owner_sql(), [job_id, owner_id])


@cache
def _job_of_owner_sql() -> str:
    return f"SELECT {job_columns().sql} FROM {Job._meta.db_table} WHERE id = %s AND owner_id = %s"


# --- the claim -------------------------------------------------------------------------------


class Claimed(NamedTuple):
    job: Job
    message_ids: list[str]  # the job.started message the claim added, if any


def job_claim(
    *,
    job_id: UUID | str,
    now: datetime,
    lease_expires_at: datetime,
    owner_unlimited_only: bool,
    default_max_running: int,
    message_id: str,
    retry_until: datetime,
) -> Claimed | None:
    """Claim the job if it is claimable, and return it as claimed, with the id of the
    job.started message its webhook gets (`message_id`) when this claim added it; None when
    the job was not claimed::

        WITH claimed AS (
            UPDATE jobs_job SET
                status = 'running',
                attempts = attempts + 1,
                lost_leases = lost_leases + (CASE WHEN status = 'running' THEN 1 ELSE 0 END),
                lease_expires_at = %(lease_expires_at)s,
                started_at = %(now)s,
                next_retry_at = NULL
            WHERE id = %(id)s
                AND (status IN ('queued', 'retrying')
                     OR (status = 'running' AND lease_expires_at < %(now)s))
                AND (NOT %(owner_unlimited_only)s OR COALESCE(
                    (SELECT max_running FROM jobs_userlimits WHERE user_id = owner_id),
                    %(default_max_running)s
                ) = 0)
            RETURNING <columns of jobs_job>
        ),
        started AS (
            INSERT INTO jobs_webhookmessage (id, owner_id, type, job_id, batch_id, url, status,
                attempts, created_at, next_attempt_at, retry_until, handed_over_at)
            SELECT %(message_id)s, claimed.owner_id, 'job.started', claimed.id, NULL,
                claimed.webhook, 'pending', 0, %(now)s, %(now)s, %(retry_until)s, %(now)s
            FROM claimed
            WHERE claimed.webhook <> '' AND 'start' = ANY(claimed.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        )
        SELECT <columns of jobs_job>, ARRAY(SELECT id FROM started) FROM claimed

    With `owner_unlimited_only` it also requires that the owner has no running
    limit: that is every claim unless running limits are in use, one round trip
    with no transaction. Parameters are bound on the client (Django's default),
    so PostgreSQL plans the statement with the flag's value and, without the
    flag, leaves the condition and its subquery out. A job without a webhook adds
    nothing (the INSERT selects no row), and an id already there nothing either, so a claim
    after a release or a retry sends no second job.started.
    """
    params = {
        "id": job_id,
        "now": now,
        "lease_expires_at": lease_expires_at,
        "owner_unlimited_only": owner_unlimited_only,
        "default_max_running": default_max_running,
        "message_id": message_id,
        "retry_until": retry_until,
    }
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), params)
        row = cursor.fetchone()
    return None if row is None else Claimed(job_columns().job(row[:-1]), row[-1])


# The claim rule, written once: waiting for an attempt, or running on a lease that lapsed
# (its worker died). Both the claim and the look at an unclaimed job test it.
_CLAIMABLE = (
    f"status IN ({_literal(Status.QUEUED)}, {_literal(Status.RETRYING)})"
    f" OR (status = {RUNNING} AND lease_expires_at < %(now)s)"
)


@cache
def _claim_sql() -> str:
    started = _message_insert(
        source="claimed", event=WebhookEvent.JOB_STARTED, wanted=WebhookFilter.START
    )
    return f"""
        WITH claimed AS (
            UPDATE {Job._meta.db_table} SET
                status = {RUNNING},
                attempts = attempts + 1,
                lost_leases = lost_leases + (CASE WHEN status = {RUNNING} THEN 1 ELSE 0 END),
                lease_expires_at = %(lease_expires_at)s,
                started_at = %(now)s,
                next_retry_at = NULL
            WHERE id = %(id)s
                AND ({_CLAIMABLE})
                AND (NOT %(owner_unlimited_only)s OR COALESCE(
                    (SELECT max_running FROM {UserLimits._meta.db_table} WHERE user_id = owner_id),
                    %(default_max_running)s
                ) = 0)
            RETURNING {job_columns().sql}
        ),
        started AS (
            {started}
        )
        SELECT {job_columns().sql}, ARRAY(SELECT id FROM started) FROM claimed
    """


class JobState(NamedTuple):
    owner_id: int
    status: str
    claimable: bool


def job_state(*, job_id: UUID | str, now: datetime) -> JobState | None:
    """The job's owner and status and whether the claim rule holds for it, or None when
    there is no such job::

        SELECT owner_id, status,
            (status IN ('queued', 'retrying')
             OR (status = 'running' AND lease_expires_at < %(now)s)) IS TRUE
        FROM jobs_job WHERE id = %(id)s
    """
    with connection.cursor() as cursor:
        cursor.execute(_job_state_sql(), {"id": job_id, "now": now})
        row = cursor.fetchone()
    return None if row is None else JobState(*row)


@cache
def _job_state_sql() -> str:
    return f"""
        SELECT owner_id, status, ({_CLAIMABLE}) IS TRUE
        FROM {Job._meta.db_table} WHERE id = %(id)s
    """


# --- a call settled ----------------------------------------------------------------------------


class Settled(NamedTuple):
    succeeded: bool  # the job succeeded by this call
    message_ids: list[str]  # the job.completed message that added, if any


def call_settle(
    *,
    call_id: int,
    attempt: int,
    report: dict[str, Any],
    cost_usd: Decimal,
    result: dict[str, Any] | None,
    finished_at: datetime,
    message_id: str,
    retry_until: datetime,
) -> Settled | None:
    """Settle the pending call, add its usage to the job and, with `result`, succeed the job
    if this attempt still holds it, adding the job.completed message (`message_id`) its
    webhook gets. None when the call was already settled; else whether the job succeeded by
    it. One statement, so all of it happens or none::

        WITH settled AS (
            UPDATE jobs_providercall SET
                outcome = %(outcome)s, provider_request_id = %(provider_request_id)s,
                stop_reason = %(stop_reason)s, latency_ms = %(latency_ms)s,
                http_status = %(http_status)s, error_code = %(error_code)s,
                error_message = %(error_message)s,
                input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s,
                cache_creation_input_tokens = %(cache_creation_input_tokens)s,
                cache_read_input_tokens = %(cache_read_input_tokens)s,
                cost_usd = %(cost_usd)s
            WHERE id = %(call_id)s AND outcome = 'pending'
            RETURNING job_id
        ),
        finished AS (
            UPDATE jobs_job AS job SET
                input_tokens = job.input_tokens + %(input_tokens)s,
                output_tokens = job.output_tokens + %(output_tokens)s,
                cache_creation_input_tokens = job.cache_creation_input_tokens
                    + %(cache_creation_input_tokens)s,
                cache_read_input_tokens = job.cache_read_input_tokens
                    + %(cache_read_input_tokens)s,
                cost_usd = job.cost_usd + %(cost_usd)s,
                status = CASE WHEN <succeeds> THEN 'succeeded' ELSE job.status END,
                result = CASE WHEN <succeeds> THEN %(result)s ELSE job.result END,
                error_code = CASE WHEN <succeeds> THEN '' ELSE job.error_code END,
                error_message = CASE WHEN <succeeds> THEN '' ELSE job.error_message END,
                finished_at = CASE WHEN <succeeds> THEN %(finished_at)s ELSE job.finished_at END,
                lease_expires_at = CASE WHEN <succeeds> THEN NULL ELSE job.lease_expires_at END
            FROM settled WHERE job.id = settled.job_id
            RETURNING job.id, job.owner_id, job.webhook, job.webhook_events,
                %(succeed)s AND job.status = 'succeeded' AND job.attempts = %(attempt)s
                    AS succeeded
        ),
        completed AS (
            INSERT INTO jobs_webhookmessage (id, owner_id, type, job_id, batch_id, url, status,
                attempts, created_at, next_attempt_at, retry_until, handed_over_at)
            SELECT %(message_id)s, finished.owner_id, 'job.completed', finished.id, NULL,
                finished.webhook, 'pending', 0, %(now)s, %(now)s, %(retry_until)s, %(now)s
            FROM finished
            WHERE finished.succeeded AND
                finished.webhook <> '' AND 'completed' = ANY(finished.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        )
        SELECT succeeded, ARRAY(SELECT id FROM completed) FROM finished

    where <succeeds> is
    `%(succeed)s AND job.status = 'running' AND job.attempts = %(attempt)s`, spelled
    out in each CASE. Each CASE reads the job row as the UPDATE locked it, so a cancel
    that commits first is not overwritten; RETURNING reads it as the UPDATE left it.
    """
    params = {
        **report,
        "call_id": call_id,
        "attempt": attempt,
        "cost_usd": cost_usd,
        "succeed": result is not None,
        "result": None
        if result is None
        else Job._meta.get_field("result").get_db_prep_value(result, connection),
        "finished_at": finished_at,
        "now": finished_at,
        "message_id": message_id,
        "retry_until": retry_until,
    }
    with connection.cursor() as cursor:
        cursor.execute(_call_settle_sql(), params)
        row = cursor.fetchone()
    return None if row is None else Settled(*row)


@cache
def _call_settle_sql() -> str:
    succeeds = f"%(succeed)s AND job.status = {RUNNING} AND job.attempts = %(attempt)s"
    success = {
        "status": _literal(Status.SUCCEEDED),
        "result": "%(result)s",
        "error_code": "''",
        "error_message": "''",
        "finished_at": "%(finished_at)s",
        "lease_expires_at": "NULL",
    }
    job_set = [f"{name} = job.{name} + %({name})s" for name in TOKEN_FIELDS] + [
        f"{name} = CASE WHEN {succeeds} THEN {value} ELSE job.{name} END"
        for name, value in success.items()
    ]
    call_set = [f"{name} = %({name})s" for name in (*CALL_REPORT_COLUMNS, *TOKEN_FIELDS)]
    completed = _message_insert(
        source="finished",
        event=WebhookEvent.JOB_COMPLETED,
        wanted=WebhookFilter.COMPLETED,
        condition="finished.succeeded AND ",
    )
    return f"""
        WITH settled AS (
            UPDATE {ProviderCall._meta.db_table} SET
                {_lines(call_set, indent=16)}
            WHERE id = %(call_id)s AND outcome = {PENDING}
            RETURNING job_id
        ),
        finished AS (
            UPDATE {Job._meta.db_table} AS job SET
                {_lines(job_set, indent=16)}
            FROM settled WHERE job.id = settled.job_id
            RETURNING job.id, job.owner_id, job.webhook, job.webhook_events,
                %(succeed)s AND job.status = {_literal(Status.SUCCEEDED)}
                AND job.attempts = %(attempt)s AS succeeded
        ),
        completed AS (
            {completed}
        )
        SELECT succeeded, ARRAY(SELECT id FROM completed) FROM finished
    """


def job_fail(
    *,
    job_id: UUID,
    attempt: int,
    error_code: str,
    error_message: str,
    now: datetime,
    message_id: str,
    retry_until: datetime,
) -> list[str] | None:
    """Fail the job if this attempt still holds it, adding the job.completed message
    (`message_id`) its webhook gets; the ids of the messages added, or None when the attempt
    no longer held the job. One statement::

        WITH failed AS (
            UPDATE jobs_job SET
                status = 'failed',
                finished_at = %(now)s,
                error_code = %(error_code)s,
                error_message = %(error_message)s,
                lease_expires_at = NULL
            WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s
            RETURNING id, owner_id, webhook, webhook_events
        ),
        completed AS (
            INSERT INTO jobs_webhookmessage (id, owner_id, type, job_id, batch_id, url, status,
                attempts, created_at, next_attempt_at, retry_until, handed_over_at)
            SELECT %(message_id)s, failed.owner_id, 'job.completed', failed.id, NULL,
                failed.webhook, 'pending', 0, %(now)s, %(now)s, %(retry_until)s, %(now)s
            FROM failed
            WHERE failed.webhook <> '' AND 'completed' = ANY(failed.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        )
        SELECT ARRAY(SELECT id FROM completed) FROM failed
    """
    params = {
        "id": job_id,
        "attempt": attempt,
        "error_code": error_code,
        "error_message": error_message,
        "now": now,
        "message_id": message_id,
        "retry_until": retry_until,
    }
    with connection.cursor() as cursor:
        cursor.execute(_job_fail_sql(), params)
        row = cursor.fetchone()
    return None if row is None else row[0]


@cache
def _job_fail_sql() -> str:
    completed = _message_insert(
        source="failed", event=WebhookEvent.JOB_COMPLETED, wanted=WebhookFilter.COMPLETED
    )
    return f"""
        WITH failed AS (
            UPDATE {Job._meta.db_table} SET
                status = {_literal(Status.FAILED)},
                finished_at = %(now)s,
                error_code = %(error_code)s,
                error_message = %(error_message)s,
                lease_expires_at = NULL
            WHERE id = %(id)s AND status = {RUNNING} AND attempts = %(attempt)s
            RETURNING id, owner_id, webhook, webhook_events
        ),
        completed AS (
            {completed}
        )
        SELECT ARRAY(SELECT id FROM completed) FROM failed
    """


def _lines(assignments: list[str], *, indent: int) -> str:
    """One assignment a line, so the statement reads as its docstring shows it (in logs too)."""
    return (",\n" + " " * indent).join(assignments)


# --- a batch's jobs ---------------------------------------------------------------------------


def jobs_copy(jobs: Iterable[Job]) -> int:
    """Insert new jobs, their values as the ORM's bulk_create would write them, in one COPY;
    how many::

        COPY jobs_job (<columns of jobs_job>) FROM STDIN

    bulk_create sends every value as a literal in the text of its INSERTs, and the driver
    scans that text for placeholders: for a 10,000-item batch that was four fifths of the
    request's CPU (PERFORMANCE.md, f). COPY sends the rows as data, in one statement.
    """
    fields = Job._meta.concrete_fields
    # The connection itself: every access through Django's proxy is a thread-local lookup.
    database = connections[connection.alias]
    count = 0
    with database.cursor() as cursor, cursor.copy(_jobs_copy_sql()) as copy:
        for job in jobs:
            copy.write_row(
                [
                    field.get_db_prep_save(field.pre_save(job, add=True), database)
                    for field in fields
                ]
            )
            count += 1
    return count


@cache
def _jobs_copy_sql() -> str:
    return f"COPY {Job._meta.db_table} ({job_columns().sql}) FROM STDIN"


# --- the batch dispatcher's round -------------------------------------------------------------

# The jobs a batch still waits for, written as the partial indexes' conditions are, so the
# planner answers each question below from its small index (jobs/models.py).
_UNFINISHED = f"status IN ({', '.join(_literal(status) for status in UNFINISHED)})"
_LIVE_BATCH = f"status IN ({_literal(BatchStatus.QUEUED)}, {_literal(BatchStatus.RUNNING)})"


def batches_lock_live() -> list[UUID]:
    """The batches not yet finished or canceled that no other dispatcher holds, locked to the
    end of the transaction::

        SELECT id FROM jobs_batch WHERE status IN ('queued', 'running') FOR UPDATE SKIP LOCKED

    The round counts what is in flight in a later statement, so it sees everything an
    earlier holder of these locks published and committed.
    """
    with connection.cursor() as cursor:
        cursor.execute(_batches_lock_live_sql())
        return [batch_id for (batch_id,) in cursor.fetchall()]


@cache
def _batches_lock_live_sql() -> str:
    return f"SELECT id FROM {Batch._meta.db_table} WHERE {_LIVE_BATCH} FOR UPDATE SKIP LOCKED"


class Published(NamedTuple):
    job_ids: list[UUID]  # round robin, as they are to be sent
    message_ids: list[str]  # the batch.started and batch.completed messages added


def batch_items_publish(
    *,
    batch_ids: list[UUID],
    window: int,
    limit: int,
    now: datetime,
    started_ids: list[str],
    completed_ids: list[str],
    retry_until: datetime,
) -> Published:
    """Mark published (enqueued_at) the next items of these locked batches, each batch up to
    `window` items published and unfinished, at most `limit` in all; start the batches that
    got their first items and finish those with nothing left. The items' ids come back round
    robin: the first of each batch, owners taking turns, then the second of each, and so on::

        WITH live AS (
            SELECT id, created_at,
                row_number() OVER (PARTITION BY owner_id ORDER BY created_at, id) AS turn
            FROM jobs_batch WHERE id = ANY(%(batch_ids)s)
        ),
        picked AS (
            SELECT item.id, row_number() OVER (PARTITION BY live.id ORDER BY item.position) AS slot,
                live.turn, live.created_at
            FROM live CROSS JOIN LATERAL (
                SELECT id, position FROM jobs_job
                WHERE batch_id = live.id AND enqueued_at IS NULL
                    AND status IN ('queued', 'running', 'retrying')
                ORDER BY position
                LIMIT greatest(0, %(window)s - (
                    SELECT count(*) FROM jobs_job
                    WHERE batch_id = live.id AND enqueued_at IS NOT NULL
                        AND status IN ('queued', 'running', 'retrying')
                ))
                FOR UPDATE SKIP LOCKED
            ) AS item
            ORDER BY slot, live.turn, live.created_at
            LIMIT %(limit)s
        ),
        published AS (
            UPDATE jobs_job AS job SET enqueued_at = %(now)s FROM picked
            WHERE job.id = picked.id AND job.enqueued_at IS NULL
                AND job.status IN ('queued', 'running', 'retrying')
            RETURNING job.id, job.batch_id
        ),
        started AS (
            UPDATE jobs_batch SET status = 'running', started_at = %(now)s
            WHERE id IN (SELECT batch_id FROM published) AND status = 'queued'
            RETURNING id, owner_id, webhook, webhook_events
        ),
        ended AS (
            UPDATE jobs_batch AS batch SET status = 'finished', finished_at = %(now)s
            WHERE batch.id = ANY(%(batch_ids)s)
                AND NOT EXISTS (SELECT 1 FROM jobs_job WHERE batch_id = batch.id
                    AND enqueued_at IS NULL AND status IN ('queued', 'running', 'retrying'))
                AND NOT EXISTS (SELECT 1 FROM jobs_job WHERE batch_id = batch.id
                    AND enqueued_at IS NOT NULL AND status IN ('queued', 'running', 'retrying'))
            RETURNING batch.id, batch.owner_id, batch.webhook, batch.webhook_events
        ),
        start_messages AS (
            INSERT INTO jobs_webhookmessage (id, owner_id, type, job_id, batch_id, url, status,
                attempts, created_at, next_attempt_at, retry_until, handed_over_at)
            SELECT message.id, started.owner_id, 'batch.started', NULL, started.id,
                started.webhook, 'pending', 0, %(now)s, %(now)s, %(retry_until)s, %(now)s
            FROM started JOIN unnest(%(batch_ids)s::uuid[], %(started_ids)s::text[])
                AS message (batch_id, id) ON message.batch_id = started.id
            WHERE started.webhook <> '' AND 'start' = ANY(started.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        ),
        end_messages AS (
            INSERT INTO jobs_webhookmessage (id, owner_id, type, job_id, batch_id, url, status,
                attempts, created_at, next_attempt_at, retry_until, handed_over_at)
            SELECT message.id, ended.owner_id, 'batch.completed', NULL, ended.id,
                ended.webhook, 'pending', 0, %(now)s, %(now)s, %(retry_until)s, %(now)s
            FROM ended JOIN unnest(%(batch_ids)s::uuid[], %(completed_ids)s::text[])
                AS message (batch_id, id) ON message.batch_id = ended.id
            WHERE ended.webhook <> '' AND 'completed' = ANY(ended.webhook_events)
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        )
        SELECT
            ARRAY(SELECT published.id FROM published JOIN picked ON picked.id = published.id
                ORDER BY picked.slot, picked.turn, picked.created_at),
            ARRAY(SELECT id FROM start_messages UNION ALL SELECT id FROM end_messages)

    An item is unpublished while unfinished with no enqueued_at: never sent, or its send
    failed (job_enqueue clears the mark). A batch that gets items is unfinished in this
    statement's snapshot, so `started` and `ended` never touch the same row. The messages'
    ids come in `started_ids` and `completed_ids`, one for each of `batch_ids` in its place.
    """
    params = {
        "batch_ids": batch_ids,
        "window": window,
        "limit": limit,
        "now": now,
        "started_ids": started_ids,
        "completed_ids": completed_ids,
        "retry_until": retry_until,
    }
    with connection.cursor() as cursor:
        cursor.execute(_batch_items_publish_sql(), params)
        return Published(*cursor.fetchone())


@cache
def _batch_items_publish_sql() -> str:
    jobs, batches = Job._meta.db_table, Batch._meta.db_table
    running, queued = _literal(BatchStatus.RUNNING), _literal(BatchStatus.QUEUED)
    return f"""
        WITH live AS (
            SELECT id, created_at,
                row_number() OVER (PARTITION BY owner_id ORDER BY created_at, id) AS turn
            FROM {batches} WHERE id = ANY(%(batch_ids)s)
        ),
        picked AS (
            SELECT item.id, row_number() OVER (PARTITION BY live.id ORDER BY item.position) AS slot,
                live.turn, live.created_at
            FROM live CROSS JOIN LATERAL (
                SELECT id, position FROM {jobs}
                WHERE batch_id = live.id AND enqueued_at IS NULL
                    AND {_UNFINISHED}
                ORDER BY position
                LIMIT greatest(0, %(window)s - (
                    SELECT count(*) FROM {jobs}
                    WHERE batch_id = live.id AND enqueued_at IS NOT NULL
                        AND {_UNFINISHED}
                ))
                FOR UPDATE SKIP LOCKED
            ) AS item
            ORDER BY slot, live.turn, live.created_at
            LIMIT %(limit)s
        ),
        published AS (
            UPDATE {jobs} AS job SET enqueued_at = %(now)s FROM picked
            WHERE job.id = picked.id AND job.enqueued_at IS NULL
                AND job.{_UNFINISHED}
            RETURNING job.id, job.batch_id
        ),
        started AS (
            UPDATE {batches} SET status = {running}, started_at = %(now)s
            WHERE id IN (SELECT batch_id FROM published) AND status = {queued}
            RETURNING id, owner_id, webhook, webhook_events
        ),
        ended AS (
            UPDATE {batches} AS batch SET status = {_literal(BatchStatus.FINISHED)},
                finished_at = %(now)s
            WHERE batch.id = ANY(%(batch_ids)s)
                AND NOT EXISTS (SELECT 1 FROM {jobs} WHERE batch_id = batch.id
                    AND enqueued_at IS NULL AND {_UNFINISHED})
                AND NOT EXISTS (SELECT 1 FROM {jobs} WHERE batch_id = batch.id
                    AND enqueued_at IS NOT NULL AND {_UNFINISHED})
            RETURNING batch.id, batch.owner_id, batch.webhook, batch.webhook_events
        ),
        start_messages AS (
            {_batch_message_insert("started", WebhookEvent.BATCH_STARTED)}
        ),
        end_messages AS (
            {_batch_message_insert("ended", WebhookEvent.BATCH_COMPLETED)}
        )
        SELECT
            ARRAY(SELECT published.id FROM published JOIN picked ON picked.id = published.id
                ORDER BY picked.slot, picked.turn, picked.created_at),
            ARRAY(SELECT id FROM start_messages UNION ALL SELECT id FROM end_messages)
    """


def _batch_message_insert(source: str, event: WebhookEvent) -> str:
    """The message for each batch of `source`, its id the one at the batch's place in
    %(batch_ids)s of the started or the completed ids."""
    started = event == WebhookEvent.BATCH_STARTED
    ids = "%(started_ids)s" if started else "%(completed_ids)s"
    return _message_insert(
        source=source,
        event=event,
        wanted=WebhookFilter.START if started else WebhookFilter.COMPLETED,
        message_id="message.id",
        join=f" JOIN unnest(%(batch_ids)s::uuid[], {ids}::text[]) AS message (batch_id, id)"
        f" ON message.batch_id = {source}.id",
    )


def batch_lock_if_done(*, batch_id: UUID) -> bool:
    """Lock the batch to the end of the transaction if it is queued or running with no item
    left to run, waiting for a dispatcher's round that holds it; whether it was locked::

        SELECT id FROM jobs_batch AS batch
        WHERE batch.id = %(batch_id)s AND batch.status IN ('queued', 'running')
            AND NOT EXISTS (SELECT 1 FROM jobs_job WHERE batch_id = batch.id
                AND enqueued_at IS NULL AND status IN ('queued', 'running', 'retrying'))
            AND NOT EXISTS (SELECT 1 FROM jobs_job WHERE batch_id = batch.id
                AND enqueued_at IS NOT NULL AND status IN ('queued', 'running', 'retrying'))
        FOR UPDATE OF batch

    While items are left it takes no lock and waits for none: one probe of each small index.
    """
    with connection.cursor() as cursor:
        cursor.execute(_batch_lock_if_done_sql(), {"batch_id": batch_id})
        return cursor.fetchone() is not None


@cache
def _batch_lock_if_done_sql() -> str:
    jobs, batches = Job._meta.db_table, Batch._meta.db_table
    return f"""
        SELECT id FROM {batches} AS batch
        WHERE batch.id = %(batch_id)s AND batch.{_LIVE_BATCH}
            AND NOT EXISTS (SELECT 1 FROM {jobs} WHERE batch_id = batch.id
                AND enqueued_at IS NULL AND {_UNFINISHED})
            AND NOT EXISTS (SELECT 1 FROM {jobs} WHERE batch_id = batch.id
                AND enqueued_at IS NOT NULL AND {_UNFINISHED})
        FOR UPDATE OF batch
    """


# --- advisory locks and the health check ---------------------------------------------------


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(name: str) -> bool:
    """A transaction-scoped advisory lock if it is free now::

    SELECT pg_try_advisory_xact_lock(%s)
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_id(name)])
        return bool(cursor.fetchone()[0])


def advisory_lock(name: str) -> None:
    """A transaction-scoped advisory lock, waiting for it::

    SELECT pg_advisory_xact_lock(%s)
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(name)])


def database_ping(*, timeout: float) -> None:
    """Raise unless the database answers within `timeout` seconds::

    SELECT 1
    """
    if connection.pool is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    connection.pool.open()  # as Django does on first use: nothing may have opened it yet
    with connection.pool.connection(timeout=timeout) as conn:
        conn.execute("SELECT 1")
