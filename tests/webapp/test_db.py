"""Pooled connections: one that sat idle is checked before it is lent, one just used is not."""

from __future__ import annotations

import psycopg
import pytest
from django.db import OperationalError, connection

from webapp.db import base

pytestmark = pytest.mark.django_db(transaction=True)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def kill_backend(pid: int) -> None:
    """End the server process behind a pooled connection, as a database restart would."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def lent_and_returned() -> int:
    """The pid behind the connection the pool lends next, the connection back in the pool."""
    connection.close()
    pid = backend_pid()
    connection.close()
    return pid


@pytest.fixture
def one_connection(settings, monkeypatch):
    """A pool of one connection, so the next checkout is the connection just returned."""
    connection.close()
    connection.close_pool()
    pool = settings.DATABASES["default"]["OPTIONS"]["pool"]
    monkeypatch.setitem(pool, "min_size", 1)
    monkeypatch.setitem(pool, "max_size", 1)
    yield
    connection.close()
    connection.close_pool()


def test_a_connection_broken_while_idle_is_replaced_before_a_query_sees_it(
    one_connection, monkeypatch
):
    monkeypatch.setattr(base, "IDLE_CHECK_SECONDS", 0.0)
    dead = lent_and_returned()
    kill_backend(dead)

    assert backend_pid() != dead


def test_a_connection_used_a_moment_ago_is_lent_without_a_check(one_connection, monkeypatch):
    monkeypatch.setattr(base, "IDLE_CHECK_SECONDS", 3600.0)
    dead = lent_and_returned()
    kill_backend(dead)

    # The price of skipping the check: a connection that broke within the window
    # fails one query, and is then discarded.
    with pytest.raises(OperationalError):
        backend_pid()
    connection.close()
    assert backend_pid() != dead
