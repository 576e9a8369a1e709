"""The Celery app: configured from Django settings (namespace CELERY), tasks autodiscovered."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.signals import beat_init
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

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


_restore_unacked = kombu_redis.QoS.restore_unacked


def _restore_unless_collected(self: kombu_redis.QoS, client: Any = None) -> Any:
    """Restore a closing channel's unacked messages, unless its connection was collected.

    When a worker loses Redis, Celery 5.7 collects the broken connection (which clears its
    transport's client) and then closes it; closing restores the unacked messages, and
    without a client that raises AttributeError, which the close's error guard does not
    catch: it ends the worker's consumer, and the worker takes no more messages after Redis
    is back (tests/chaos/test_faults.py: jobs submitted while the broker is down). Over a lost
    connection nothing can be restored anyway; the messages stay in Redis's unacked set, and
    the reaper republishes their jobs.
    """
    if client is None and self.channel.connection.client is None:
        return None
    return _restore_unacked(self, client)


kombu_redis.QoS.restore_unacked = _restore_unless_collected


@contextmanager
def _shared_client(self: kombu_redis.Channel, client: Any = None) -> Iterator[Any]:
    """The channel's one client over its connection pool, instead of a new one per command.

    kombu builds a redis client for every publish, event, ack and unacked-set entry, and
    redis-py 8's constructor copies its table of response callbacks each time: 8% of a
    busy worker's CPU. A client holds no connection of its own (each command borrows one
    from the pool), so threads can share it; it is built again when the channel's pool is
    (after a reconnect).
    """
    if client:
        yield client
        return
    if getattr(self.connection, "client", None) is None:
        # Collected after the worker lost Redis: a task that ran across the loss acks over
        # this channel. kombu logs a connection error there, where this AttributeError
        # (from building the pool) ended the worker's consumer for good. Nothing is lost:
        # Redis came back without the message, or redelivers it to a claim that skips it.
        raise RedisConnectionError("the channel's broker connection was collected")
    shared = self.__dict__.get("_shared_client")
    if shared is None or shared.connection_pool is not self.pool:
        shared = self.__dict__["_shared_client"] = self._create_client()
    yield shared


kombu_redis.Channel.conn_or_acquire = _shared_client
