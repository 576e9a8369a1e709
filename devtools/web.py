"""The web server's command line, in one place: the demo, the bench and the tests run what
docker-compose.yml and the Dockerfile run (tests/test_deployment.py holds them to it).

gunicorn manages the processes (graceful restarts, a worker that dies is replaced) and each
worker is uvicorn's event loop serving webapp.asgi: PERFORMANCE.md ("The web server") has the
measurements it was chosen by.
"""

from __future__ import annotations

import sys

ASGI_APP = "webapp.asgi"
WORKER_CLASS = "uvicorn_worker.UvicornWorker"
# Arguments every deployment passes, whatever its address and process count.
SERVER_ARGS = (f"--worker-class={WORKER_CLASS}", "--no-control-socket")


def web_command(bind: str, *, workers: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    """gunicorn serving the ASGI app on `bind` ("127.0.0.1:8000"; port 0 picks a free one)."""
    return [
        sys.executable, "-m", "gunicorn", ASGI_APP, f"--bind={bind}", f"--workers={workers}",
        *SERVER_ARGS, *extra,
    ]  # fmt: skip
