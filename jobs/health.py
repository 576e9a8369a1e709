"""What /health reports: the database, the broker, and the workers that answer a ping."""

from __future__ import annotations

from typing import Any

from django.db import connection

from celery_app import app as celery_app

PING_TIMEOUT = 1.0


def system_health() -> dict[str, Any]:
    database = _check_database()
    broker = _check_broker()
    workers = _workers_seen() if broker else []
    return {"ok": database and broker, "database": database, "broker": broker, "workers": workers}


def _check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
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
