"""Fixtures for tests of the real stack: the simulator, Celery workers, the API over HTTP.

Loaded for the whole suite (tests/conftest.py), so integration and browser tests share one
simulator.
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from tests.integration.harness import (
    ApiClient,
    Simulator,
    WebServer,
    Worker,
    web_env,
    worker_env,
)


@pytest.fixture(scope="session")
def simulator(_delete_session_queue):
    sim = Simulator.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def worker_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def worker(django_db_setup, simulator, worker_logs, request):
    """One worker shared by a module's tests; modules that kill workers start their own instead."""
    name = f"{request.module.__name__.rsplit('.', 1)[-1]}@aijobs-test"
    proc = Worker(name=name, log_path=worker_logs / f"{name}.log", env=worker_env(simulator.url))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def start_worker(django_db_setup, simulator, worker_logs):
    """Start dedicated workers for one test; all are stopped by PID at its end."""
    started: list[Worker] = []

    def start(**env_overrides: str) -> Worker:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}@aijobs-test"
        proc = Worker(
            name=name,
            log_path=worker_logs / f"{name}.log",
            env=worker_env(simulator.url, **env_overrides),
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


# Short, so a test sees a keep-alive comment on an idle stream without waiting 15 s.
TEST_KEEPALIVE_SECONDS = "1"


@pytest.fixture(scope="session")
def web_server(django_db_setup, worker_logs):
    """The ASGI server, shared by the session: event streams, waits, the browser tests."""
    server = WebServer(
        log_path=worker_logs / "web.log",
        env=web_env(AIJOBS_SSE_KEEPALIVE_SECONDS=TEST_KEEPALIVE_SECONDS),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_web_server(django_db_setup, worker_logs):
    """Start a web server of the test's own (other settings); stopped by PID at its end."""
    started: list[WebServer] = []

    def start(**env_overrides: str) -> WebServer:
        server = WebServer(
            log_path=worker_logs / f"web-{uuid.uuid4().hex[:6]}.log", env=web_env(**env_overrides)
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def asgi_api(web_server, token):
    return ApiClient(base_url=web_server.url, token=token)


@pytest.fixture
def api(live_server, token):
    return ApiClient(base_url=live_server.url, token=token)


@pytest.fixture
def other_api(live_server, other_token):
    return ApiClient(base_url=live_server.url, token=other_token)


@pytest.fixture(scope="session")
def _delete_session_queue():
    """Messages left for jobs of finished tests would otherwise stay in Redis for good."""
    yield
    from celery_app import app

    with app.connection_for_write() as conn:
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.AIJOBS_BATCH_QUEUE):
            conn.default_channel.queue_delete(queue)


@pytest.fixture
def throwaway_kind(settings):
    """The test-only `headline` kind, registered here and in the workers a test starts."""
    from jobs import kinds
    from tests import throwaway_kind as module

    kinds.register(module)
    settings.AIJOBS_MODELS = {**settings.AIJOBS_MODELS, module.NAME: module.DEFAULT_MODEL}
    yield module
    kinds.unregister(module.NAME)
