"""What /health reports: the database, the broker, the workers that answer a ping, and
whether jobs are moving at all."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from celery_app import app as celery_app
from jobs import rows
from jobs.models import Job, Status

PING_TIMEOUT = 1.0


def system_health() -> dict[str, Any]:
    database = _check_database()
    broker = _check_broker()
    workers = _workers_seen() if broker else []
    stalled = database and jobs_stalled()
    return {
        "ok": database and broker and not stalled,
        "database": database,
        "broker": broker,
        "workers": workers,
        "jobs_stalled": stalled,
    }


def jobs_stalled() -> bool:
    """Jobs have waited longer than AIJOBS_STALL_SECONDS and none was claimed meanwhile.

    A worker can stay alive, and even answer pings, after it stopped consuming
    (a broker reset can leave it deaf); only jobs that move prove it works.
    """
    since = timezone.now() - timedelta(seconds=settings.AIJOBS_STALL_SECONDS)
    waiting = Job.objects.filter(status=Status.QUEUED, created_at__lt=since).exists()
    return waiting and not Job.objects.filter(started_at__gte=since).exists()


def _check_database() -> bool:
    try:
        rows.database_ping()
        return True
    except Exception:
        return False


def _check_broker() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=PING_TIMEOUT)
        return True
    except Exception:
        return False


def _workers_seen() -> list[str]:
    replies = celery_app.control.ping(timeout=PING_TIMEOUT) or []
    return sorted(name for reply in replies for name in reply)
