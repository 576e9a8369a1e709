"""The worker-kill and duplicate-delivery guarantees on RabbitMQ (quorum queues), where one runs."""

from __future__ import annotations

import socket

import pytest

from tests.chaos.harness import Stack, check_invariants
from tests.chaos.test_faults import calls_in_flight, texts
from tests.integration.harness import wait_for

RABBITMQ = ("127.0.0.1", 5672)
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def rabbitmq_reachable() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(RABBITMQ) == 0


pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.skipif(
        not rabbitmq_reachable(),
        reason=f"no RabbitMQ on {RABBITMQ[0]}:{RABBITMQ[1]}: RabbitMQ tests not run",
    ),
]


@pytest.fixture(scope="module")
def stack():
    stack = Stack.start(CELERY_BROKER_URL=BROKER_URL, AIJOBS_MAX_LOST_LEASES="10")
    stack.start_worker()
    yield stack
    stack.stop()


def test_a_killed_workers_jobs_finish_once(stack):
    before = stack.simulator.stats()["total"]
    ids = stack.submit_many(texts(60, "[[sim:latency=400]] [[sim:429*1]]"))
    wait_for(lambda: calls_in_flight(stack), timeout=60, what="calls in flight")

    stack.workers[0].kill()
    stack.start_worker()
    stack.wait_all_terminal(ids, timeout=180)

    assert check_invariants(stack, ids, before) == {"succeeded": len(ids)}


def test_a_message_delivered_three_times_runs_the_job_once(stack):
    before = stack.simulator.stats()["total"]
    (job_id,) = stack.submit_many(texts(1, "[[sim:latency=500]]"))
    resend = f"job_enqueue(job_id={job_id!r})"
    stack.manage("shell", "-c", f"from jobs.submission import job_enqueue; {resend}; {resend}")

    stack.wait_all_terminal([job_id], timeout=60)

    assert check_invariants(stack, [job_id], before) == {"succeeded": 1}
    assert stack.query("SELECT attempts FROM jobs_job WHERE id = %s", (job_id,)) == [(1,)]
