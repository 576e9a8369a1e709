"""Job rows read by hand-written SQL, for the statements run most often.

The status poll and the claim run once per request and once per job. Compiling
them through the ORM cost more CPU than everything else they do, and the claim
needs `UPDATE ... RETURNING`, which the ORM cannot write. Their SQL is built once
from the model, and their rows become Job instances exactly as the ORM would
build them (the fields' own database converters applied).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import connection
from django.db.models.expressions import Col

from jobs.models import Job


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


def fetch_job(sql: str, params: Sequence[Any] | dict[str, Any]) -> Job | None:
    """The Job in the first row `sql` returns, its columns listed as `job_columns().sql`."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else job_columns().job(row)


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def try_advisory_lock(name: str) -> bool:
    """A transaction-scoped advisory lock if it is free now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_id(name)])
        return bool(cursor.fetchone()[0])


def advisory_lock(name: str) -> None:
    """A transaction-scoped advisory lock, waiting for it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(name)])
