"""Settings for the test suite: the real ones, with fast retries and short timeouts."""

from __future__ import annotations

import os
import uuid

# Each test session gets its own queue and Redis keys, so a stale message or
# rate-limit state from an earlier run (or another checkout, or a demo, on the same
# Redis) never reaches this run. Set here because pytest-django reads these settings
# before any conftest runs; the workers a test starts inherit them.
os.environ.setdefault("AIJOBS_QUEUE", f"aijobs-test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("AIJOBS_REDIS_PREFIX", os.environ["AIJOBS_QUEUE"])
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_HTTPS", "false")
os.environ.setdefault("AIJOBS_CLAUDE_TIMEOUT", "3")
os.environ.setdefault("AIJOBS_MAX_ATTEMPTS", "4")
os.environ.setdefault("AIJOBS_RETRY_BASE_DELAY", "0.2")
os.environ.setdefault("AIJOBS_RETRY_MAX_DELAY", "2")
os.environ.setdefault("AIJOBS_VISIBILITY_TIMEOUT", "25")
# The tests' receivers listen on 127.0.0.1; retries come soon, a hung receiver is given up soon.
os.environ.setdefault("AIJOBS_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("AIJOBS_WEBHOOK_RETRY_BASE_SECONDS", "0.2")
os.environ.setdefault("AIJOBS_WEBHOOK_TIMEOUT_SECONDS", "2")
# Each test run gets its own queue and Redis keys, so a stale message or rate-limit state from an
# earlier run (or another checkout's run on the same Redis) never reaches this one. Set here, not
# in a conftest: pytest-django loads these settings before any conftest is imported.
os.environ.setdefault(
    "AIJOBS_REDIS_PREFIX",
    os.environ.setdefault("AIJOBS_QUEUE", f"aijobs-test-{uuid.uuid4().hex[:8]}"),
)

from webapp.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# One test database per test run, so two runs on one server (a developer's and
# CI's, or two checkouts) never drop each other's database.
DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}  # noqa: F405
