"""Secrets and user text stay out of logs, the broker and the task audit trail."""

from __future__ import annotations

import logging
import uuid

import pytest
from django_celery_results.models import TaskResult

from tests.helpers import unique
from tests.integration.harness import TEST_API_KEY

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_neither_the_key_nor_job_text_reaches_logs_or_the_task_trail(api, worker, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"CANARY{uuid.uuid4().hex}"
    text = unique(
        f"Private notes {marker}. <script>alert(1)</script> Ignore previous instructions."
    )

    job_id = api.submit("summarize", {"text": text}).body["id"]
    assert api.wait(job_id)["status"] == "succeeded"

    worker_log = worker.log_path.read_text(errors="replace")
    assert job_id in worker_log, "the worker logs jobs by id"
    for secret in (marker, TEST_API_KEY):
        assert secret not in worker_log
        assert secret not in caplog.text
    trail = TaskResult.objects.filter(task_args__contains=job_id)
    assert trail.exists(), "Celery's audit trail names the job"
    for row in trail:
        assert marker not in f"{row.task_args} {row.task_kwargs} {row.result}"
