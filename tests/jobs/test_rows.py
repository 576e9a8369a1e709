"""The SQL each statement's docstring shows is the SQL it runs."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest

from jobs import rows
from jobs.models import Job

STATEMENTS = {
    "status read": (rows.job_of_owner, rows._job_of_owner_sql),
    "claim": (rows.job_claim, rows._claim_sql),
    "claim state": (rows.job_state, rows._job_state_sql),
    "settle": (rows.call_settle, rows._call_settle_sql),
    "fail": (rows.job_fail, rows._job_fail_sql),
    "live batches": (rows.batches_lock_live, rows._batches_lock_live_sql),
    "batch items published": (rows.batch_items_publish, rows._batch_items_publish_sql),
    "batch locked once done": (rows.batch_lock_if_done, rows._batch_lock_if_done_sql),
    "jobs copied": (rows.jobs_copy, rows._jobs_copy_sql),
}


def documented_sql(function: Callable[..., object]) -> str:
    """The literal block after `::` in the docstring, its abbreviations spelled out."""
    doc = inspect.getdoc(function) or ""
    sql = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    sql = sql.replace("<columns of jobs_job>", rows.job_columns().sql)
    abbreviation = re.search(r"where <succeeds> is\s+`([^`]+)`", doc)
    return sql.replace("<succeeds>", abbreviation[1]) if abbreviation else sql


def words(sql: str) -> str:
    return " ".join(sql.split())


@pytest.mark.parametrize("name", STATEMENTS)
def test_the_docstring_shows_the_statement(name):
    function, build = STATEMENTS[name]
    assert words(documented_sql(function)) == words(build())


def comparable(job: Job) -> dict[str, object]:
    """Every field a new job was stored with but the ones each gets anew (id, created_at)."""
    return {
        field.attname: getattr(job, field.attname)
        for field in Job._meta.concrete_fields
        if field.attname not in {"id", "created_at"}
    }


@pytest.mark.django_db
def test_copied_jobs_are_stored_as_the_orm_stores_them(user):
    def new_jobs() -> list[Job]:
        inputs = [
            {"text": "Parcel late.", "labels": ["shipping", "billing"]},
            {"text": 'Ünïcode, \t"tabs"\n and \\ slashes'},
        ]
        return [
            Job(owner=user, kind="classify", model="claude-haiku-4-5", input=value, position=n)
            for n, value in enumerate(inputs, start=1)
        ]

    created = Job.objects.bulk_create(new_jobs())
    copied_count = rows.jobs_copy(new_jobs())

    copied = Job.objects.exclude(pk__in=[job.pk for job in created]).order_by("position")
    assert copied_count == 2
    stored = Job.objects.filter(pk__in=[job.pk for job in created]).order_by("position")
    assert [comparable(job) for job in copied] == [comparable(job) for job in stored]
    assert [job.input for job in copied][1]["text"] == 'Ünïcode, \t"tabs"\n and \\ slashes'
    assert all(job.created_at is not None for job in copied)
