"""celery_app's two changes to kombu's Redis transport that workers rely on."""

from __future__ import annotations

import pytest

from celery_app import app


@pytest.fixture
def channel():
    with app.connection_for_write() as connection:
        if connection.transport_cls != "redis":
            pytest.skip("the broker is not Redis")
        channel = connection.default_channel
        yield channel


def test_a_channels_commands_share_one_client_over_its_pool(channel):
    with channel.conn_or_acquire() as first:
        assert first.ping()
    with channel.conn_or_acquire() as second:
        pass

    assert second is first
    assert first.connection_pool is channel.pool


def test_a_new_pool_gets_a_client_of_its_own(channel):
    with channel.conn_or_acquire() as before:
        pass
    channel._pool = None  # what a reconnect does

    with channel.conn_or_acquire() as after:
        assert after.ping()

    assert after is not before
    assert after.connection_pool is channel.pool


def test_a_client_given_is_the_one_used(channel):
    given = channel._create_client()

    with channel.conn_or_acquire(given) as used:
        pass

    assert used is given


def test_an_ack_over_a_collected_connection_is_a_connection_error_kombu_logs():
    """A worker that lost Redis collects its connection; a task that ran across the loss
    then acks over the old channel, and kombu logs connection errors there (ack_log_error),
    where any other error ends the worker's consumer."""
    with app.connection_for_write() as connection:
        if connection.transport_cls != "redis":
            pytest.skip("the broker is not Redis")
        channel = connection.default_channel
        channel._pool = None
        connection.collect()

        with pytest.raises(channel.connection_errors):
            channel.qos.ack("a delivery tag")
