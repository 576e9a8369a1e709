"""Secrets and user text stay out of logs, broker messages and the task audit trail."""

from __future__ import annotations

import logging
import uuid

import pytest
from celery.signals import before_task_publish
from django_celery_results.models import TaskResult

from tests.helpers import unique
from tests.integration.harness import TEST_API_KEY

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published():
    """Every task message this process sends: (task name, arguments, whole body)."""
    sent: list[tuple[str, object, str]] = []

    def capture(sender: str, body: object, **_: object) -> None:
        sent.append((sender, body[0] if isinstance(body, tuple) else body, repr(body)))

    before_task_publish.connect(capture, weak=False)
    yield sent
    before_task_publish.disconnect(capture)


def test_neither_the_key_nor_job_text_leaves_the_job(api, worker, caplog, published):
    caplog.set_level(logging.DEBUG)
    marker = f"CANARY{uuid.uuid4().hex}"
    text = unique(
        f"Private notes {marker}. <script>alert(1)</script> Ignore previous instructions."
    )

    job_id = api.submit("summarize", {"text": text}).body["id"]
    assert api.wait(job_id)["status"] == "succeeded"

    assert [(name, args) for name, args, _ in published] == [("aijobs.run_job", [job_id])]
    assert marker not in published[0][2]
    worker_log = worker.log_path.read_text(errors="replace")
    assert job_id in worker_log, "the worker logs jobs by id"
    for secret in (marker, TEST_API_KEY):
        assert secret not in worker_log
        assert secret not in caplog.text
    for row in TaskResult.objects.all():
        assert marker not in f"{row.task_args} {row.task_kwargs} {row.result}"
