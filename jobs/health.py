"""What /health reports: the database, the broker, the workers that answer a ping, and
whether jobs are moving at all."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from celery_app import app as celery_app
from jobs import rows
from jobs.models import Job, Status

PING_TIMEOUT = 1.0
# The pool would wait its own timeout (30 s) for a connection while the database is
# down; a probe must answer 503 well within a load balancer's patience instead.
DATABASE_TIMEOUT = 2.0


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
    """Single jobs, or batch items, have waited longer than AIJOBS_STALL_SECONDS and none of
    them was claimed meanwhile.

    A worker can stay alive, and even answer pings, after it stopped consuming
    (a broker reset can leave it deaf); only jobs that move prove it works. Each queue
    is asked on its own: workers taking single jobs prove nothing of the batch queue,
    which a deployment may have left without a worker.
    """
    since = timezone.now() - timedelta(seconds=settings.AIJOBS_STALL_SECONDS)
    return any(
        _stalled(Job.objects.filter(batch__isnull=single), since) for single in (True, False)
    )


def _stalled(jobs: QuerySet[Job], since: datetime) -> bool:
    waiting = jobs.filter(status=Status.QUEUED, created_at__lt=since).exists()
    return waiting and not jobs.filter(started_at__gte=since).exists()


def _check_database() -> bool:
    try:
        rows.database_ping(timeout=DATABASE_TIMEOUT)
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
    """The workers that answer a ping; none when the ping itself fails (its pooled broker
    connection can be a dead one from before a broker restart), never an error page."""
    try:
        replies = celery_app.control.ping(timeout=PING_TIMEOUT) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)
