"""Django's PostgreSQL backend, its pooled connections checked only after sitting idle.

Django's pool, with CONN_HEALTH_CHECKS, runs a check query on every checkout:
one more round trip for every request and for every step of a job. A connection
that was handed out a moment ago is all but certainly alive, so this backend
checks only those idle for longer than IDLE_CHECK_SECONDS (HikariCP's "alive
bypass window" is the same rule). A connection broken by a database restart has
normally sat idle through the restart itself, so it is checked and replaced. One
that breaks inside the window fails its next query once; Django and the pool
then discard it.
"""

from __future__ import annotations

import time
from typing import Any

from django.db.backends.postgresql import base
from psycopg import Connection, Error
from psycopg_pool import ConnectionPool

IDLE_CHECK_SECONDS = 1.0
CHECKED_OUT_AT = "aijobs_checked_out_at"


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Connection[Any]:
        while True:
            connection = super().get_new_connection(conn_params)
            if self.pool is None or _alive(connection):
                return connection
            # Broken: the pool sees it closed, drops it and opens a new one.
            self.pool.putconn(connection)


def _alive(connection: Connection[Any]) -> bool:
    now = time.monotonic()
    last = getattr(connection, CHECKED_OUT_AT, None)
    setattr(connection, CHECKED_OUT_AT, now)
    if last is not None and now - last < IDLE_CHECK_SECONDS:
        return True
    try:
        ConnectionPool.check_connection(connection)
    except Error:
        return False
    return True
