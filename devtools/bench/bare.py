"""Bare Celery, the baseline of scenario a: a no-op task and the platform's worker settings.

`celery -A devtools.bench.bare worker -P threads -c N -Q <queue>` runs it. What differs from
the platform's app is everything the platform adds on top of Celery: no Django, no result
backend, no task events; what is the same is the broker, the serializer, late acks,
prefetch 1, reject-on-worker-lost and the broker's transport options.
"""

from __future__ import annotations

import os

from celery import Celery

BROKER_ENV = "CELERY_BROKER_URL"
QUEUE_ENV = "AIJOBS_BENCH_BARE_QUEUE"
NOOP_TASK = "bench.noop"

app = Celery("aijobs-bench-bare", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=os.environ.get(QUEUE_ENV, "aijobs-bench-bare"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": 3600,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    },
)


@app.task(name=NOOP_TASK)
def noop(index: int) -> None:
    """Nothing: what a run of these costs is Celery's own cost per task."""
