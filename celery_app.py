"""The Celery app: configured from Django settings (namespace CELERY), tasks autodiscovered."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("aijobs")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@beat_init.connect
def _beat_sends_no_task_sent_events(sender: Any, **kwargs: Any) -> None:
    """Beat publishes only the chores (reaper, cleanup, dispatch, webhook sweep), every few
    seconds: their task-sent events would list them in Flower as pending runs burying the jobs.
    The worker sends none for them either (their tasks' send_events=False), so Flower shows
    job runs and nothing else."""
    sender.app.conf.task_send_sent_event = False
