"""Django settings for aijobs, read from the environment (see .env.example)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from jobs import kinds
from webapp.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_json,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-debug"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "axes",
    "csp",
    # Serves the API docs page's Swagger UI from its own static files, not a CDN.
    "ninja",
    "jobs",
    "webapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Serves static files from the web server, with compression and caching headers.
    "webapp.static_files.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees the login view's answer and replaces it when the login is locked out.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.context_processors.platform",
            ],
        },
    },
]

# Each process keeps a pool of connections shared by its threads: a worker with
# hundreds of threads waiting on Claude returns its connection while it waits.
AIJOBS_DB_POOL_SIZE = env_int("AIJOBS_DB_POOL_SIZE", 16, minimum=1)
DATABASES = {
    "default": {
        **database_from_url(env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/aijobs")),
        # Django's backend, its pool checking a connection before lending it only when
        # it sat idle (webapp/db/base.py): a PostgreSQL restart costs the next query a
        # reconnect instead of an error, without a check query on every checkout.
        "ENGINE": "webapp.db",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {"pool": {"min_size": 1, "max_size": AIJOBS_DB_POOL_SIZE, "timeout": 30}},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Login throttling (django-axes) -------------------------------------------
# django-axes rather than the Redis limiter in jobs/ratelimit.py: that one paces a rate
# (GCRA), while a lockout counts failures in a row, resets on success and needs an admin
# unlock, all of which axes does, hooked into every authenticate() (the admin's login too).
# Failures are counted per username and client address together, so someone guessing one
# account's password is stopped without locking that user out everywhere, and another
# user behind the same address still signs in. Behind a proxy the address is the proxy's
# (REMOTE_ADDR: forwarded headers can be forged), which makes the count per username.
# Unlock: `python manage.py axes_reset_username NAME` (or axes_reset_ip_username IP NAME,
# or axes_reset for everyone), or delete the user's row under Axes > Access attempts in
# the admin. The cooldown ends a lockout by itself; a failure during it starts it again.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AIJOBS_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AIJOBS_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The lockout is the login page again, saying why and for how long (429, Retry-After).
AXES_LOCKOUT_CALLABLE = "webapp.views.auth.locked_out"
# Axes would also keep a row per successful login, a table nothing here prunes or reads.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
# Static files are found in the apps at startup, so no collectstatic step is
# needed before `make demo` or the tests; the image runs collectstatic anyway.
WHITENOISE_USE_FINDERS = True

# Bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("AIJOBS_MAX_BODY_BYTES", 1_048_576, minimum=1024)

# Served over HTTPS (directly or behind a proxy that sets X-Forwarded-Proto):
# secure cookies, redirects to https and HSTS. Off for plain-http local runs.
HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31_536_000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
# Preloading is a one-way commitment for a whole domain: the operator's call, not ours.
SECURE_HSTS_PRELOAD = False
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The health check is for load balancers, which probe over plain http.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
SESSION_COOKIE_HTTPONLY = True

# Only this site's own files run, style or load: no inline script, style element or style
# attribute (values a template must set go through app.js or SVG attributes), no plugins,
# no framing. The API docs' Swagger UI is served from ninja's static files and fits too;
# its stylesheet draws a few icons from data: URIs.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("AIJOBS_LOG_LEVEL", "INFO")},
    # httpx2 logs request lines only; the SDK's own debug logging would print
    # whole prompts, so it stays at WARNING whatever the root level is.
    "loggers": {
        "anthropic": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        # Its start-up banner and every successful login at INFO; failures and lockouts are
        # WARNING, which is what an operator needs to see.
        "axes": {"level": "WARNING"},
    },
}

# --- Claude ---------------------------------------------------------------

ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL", "")
# Set by the demo when it points ANTHROPIC_BASE_URL at the simulator, so pages can say so.
AIJOBS_SIMULATED = env_bool("AIJOBS_SIMULATED", False)
# Linked from the web UI's navigation; Flower itself asks for FLOWER_BASIC_AUTH.
AIJOBS_FLOWER_URL = env_str("AIJOBS_FLOWER_URL", "http://127.0.0.1:5555")

# USD per million tokens. Cache writes cost 1.25x input and cache reads 0.1x,
# as on Anthropic's price list; override with AIJOBS_MODEL_PRICES (JSON).
_DEFAULT_PRICES = {
    "claude-haiku-4-5": {"input": "1", "output": "5", "cache_write": "1.25", "cache_read": "0.10"},
    "claude-sonnet-4-5": {
        "input": "3",
        "output": "15",
        "cache_write": "3.75",
        "cache_read": "0.30",
    },
    "claude-sonnet-4-6": {
        "input": "3",
        "output": "15",
        "cache_write": "3.75",
        "cache_read": "0.30",
    },
    "claude-opus-4-5": {"input": "5", "output": "25", "cache_write": "6.25", "cache_read": "0.50"},
    "claude-opus-4-6": {"input": "5", "output": "25", "cache_write": "6.25", "cache_read": "0.50"},
}


def _prices(raw: dict[str, dict[str, str]]) -> dict[str, dict[str, Decimal]]:
    fields = ("input", "output", "cache_write", "cache_read")
    try:
        return {model: {f: Decimal(str(table[f])) for f in fields} for model, table in raw.items()}
    except (KeyError, ArithmeticError, TypeError) as exc:
        raise ImproperlyConfigured(f"AIJOBS_MODEL_PRICES needs {fields} per model: {exc}") from None


AIJOBS_MODEL_PRICES = _prices(env_json("AIJOBS_MODEL_PRICES", _DEFAULT_PRICES))
# Kinds beyond the built-in ones: dotted paths of modules that keep jobs.kinds.JobKind.
AIJOBS_KIND_MODULES = env_list("AIJOBS_KIND_MODULES", [])
try:
    kinds.load(AIJOBS_KIND_MODULES)
except (ImportError, kinds.InvalidKind) as _error:
    raise ImproperlyConfigured(f"AIJOBS_KIND_MODULES: {_error}") from None
# The model per kind: AIJOBS_MODEL_<KIND>, else the kind's own default.
AIJOBS_MODELS = {
    name: env_str(f"AIJOBS_MODEL_{name.upper()}", kind.DEFAULT_MODEL)
    for name, kind in kinds.KINDS.items()
}
for _kind, _model in AIJOBS_MODELS.items():
    if _model not in AIJOBS_MODEL_PRICES:
        raise ImproperlyConfigured(f"model {_model!r} for {_kind} has no entry in the price table")

AIJOBS_MAX_INPUT_CHARS = env_int("AIJOBS_MAX_INPUT_CHARS", 100_000, minimum=100)
AIJOBS_CLAUDE_TIMEOUT = env_float("AIJOBS_CLAUDE_TIMEOUT", 60.0, minimum=1.0)
# Stream answers from Claude and publish the output as it is written; off, each call
# waits for the whole answer (no output events, and a cancel cannot cut a call short).
# A batch's items are never streamed (workers/runner.py).
AIJOBS_STREAM_OUTPUT = env_bool("AIJOBS_STREAM_OUTPUT", True)
AIJOBS_MAX_ATTEMPTS = env_int("AIJOBS_MAX_ATTEMPTS", 5, minimum=1)
AIJOBS_RETRY_BASE_DELAY = env_float("AIJOBS_RETRY_BASE_DELAY", 2.0)
AIJOBS_RETRY_MAX_DELAY = env_float("AIJOBS_RETRY_MAX_DELAY", 60.0)
AIJOBS_IDEMPOTENCY_WINDOW_HOURS = env_int("AIJOBS_IDEMPOTENCY_WINDOW_HOURS", 24, minimum=1)
# A batch (POST /batches) holds at most this many items, in a body or file of at most this
# many bytes; its endpoint streams the upload, so it takes more than AIJOBS_MAX_BODY_BYTES.
AIJOBS_BATCH_MAX_ITEMS = env_int("AIJOBS_BATCH_MAX_ITEMS", 100_000, minimum=1)
AIJOBS_BATCH_MAX_BYTES = env_int("AIJOBS_BATCH_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)

# --- Limits and budgets -------------------------------------------------------
# The provider's limits per model ("*" for any other), as on the organisation's
# tier: {"claude-sonnet-4-6": {"rpm": 4000, "input_tpm": 2000000, "output_tpm": 400000}}.
AIJOBS_PROVIDER_LIMITS = env_json("AIJOBS_PROVIDER_LIMITS", {})
if not isinstance(AIJOBS_PROVIDER_LIMITS, dict):
    raise ImproperlyConfigured("AIJOBS_PROVIDER_LIMITS must be a JSON object of models")
# Defaults per user (0: no limit); each user's row in the admin overrides them.
AIJOBS_SUBMISSIONS_PER_MINUTE = env_int("AIJOBS_SUBMISSIONS_PER_MINUTE", 600)
AIJOBS_MAX_RUNNING_PER_USER = env_int("AIJOBS_MAX_RUNNING_PER_USER", 0)
_budget = env_str("AIJOBS_DEFAULT_BUDGET_USD", "")
try:
    AIJOBS_DEFAULT_BUDGET_USD = Decimal(_budget) if _budget else None
except ArithmeticError:
    raise ImproperlyConfigured(
        f"AIJOBS_DEFAULT_BUDGET_USD must be a number, got {_budget!r}"
    ) from None

# --- Reconciliation -------------------------------------------------------------
# A job whose worker died this many times is failed with worker_lost instead of
# crashing another worker (with task_reject_on_worker_lost it would loop forever).
AIJOBS_MAX_LOST_LEASES = env_int("AIJOBS_MAX_LOST_LEASES", 2)
# A job queued this long after its message was published gets a new message.
AIJOBS_REQUEUE_AFTER = env_int("AIJOBS_REQUEUE_AFTER", 300, minimum=1)
AIJOBS_REAPER_INTERVAL = env_float("AIJOBS_REAPER_INTERVAL", 15.0, minimum=0.5)
AIJOBS_RESULTS_TTL_DAYS = env_int("AIJOBS_RESULTS_TTL_DAYS", 7, minimum=1)
# /health reports jobs as stalled when some waited this long and none was claimed meanwhile.
AIJOBS_STALL_SECONDS = env_int("AIJOBS_STALL_SECONDS", 300, minimum=10)

# --- Batches -------------------------------------------------------------------
# A batch's items are rows first: a dispatcher publishes them, at most this many of one batch
# published and unfinished at a time, so a huge batch never floods the broker or the workers.
AIJOBS_BATCH_WINDOW = env_int("AIJOBS_BATCH_WINDOW", 50, minimum=1)
# Batch items published and unfinished, all batches together, while jobs submitted on their own
# are queued or running (0: no limit but the windows). About half the batch workers' slots
# (workers x concurrency) leaves the database and the provider room for them; with no single
# job about, the batches have the whole fleet (jobs/dispatch.py).
AIJOBS_BATCH_MAX_IN_FLIGHT = env_int("AIJOBS_BATCH_MAX_IN_FLIGHT", 0)
# A worker consuming both queues (the default without -Q) takes batch items behind every other
# job, so a job submitted on its own is taken by the next free worker slot, not after the
# windows of the batches running. kombu's Redis transport pops priority 0 (any other message)
# strictly before 9, across all the queues a worker consumes.
AIJOBS_BATCH_PRIORITY: int | None = 9
# Beat's dispatch round, the safety net behind the kicks at submission and at each item's end.
AIJOBS_BATCH_DISPATCH_INTERVAL = env_float("AIJOBS_BATCH_DISPATCH_INTERVAL", 1.0, minimum=0.1)

# --- Event streams ----------------------------------------------------------------
# A comment line this often keeps proxies and load balancers from closing an idle stream.
AIJOBS_SSE_KEEPALIVE_SECONDS = env_float("AIJOBS_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.1)

# --- Webhooks --------------------------------------------------------------------
# Hosts (names or addresses) a webhook may reach though they resolve to loopback, private or
# other internal addresses, and that may take plain http: the demo and the tests list 127.0.0.1.
AIJOBS_WEBHOOK_ALLOWED_HOSTS = env_list("AIJOBS_WEBHOOK_ALLOWED_HOSTS", [])
# One try's whole deadline (connect, send, answer): a slow receiver cannot hold a worker.
AIJOBS_WEBHOOK_TIMEOUT_SECONDS = env_float("AIJOBS_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# A message is tried again for this long after its event, with backoff from this base (x4 a try).
AIJOBS_WEBHOOK_RETRY_HOURS = env_float("AIJOBS_WEBHOOK_RETRY_HOURS", 24.0, minimum=0.0)
AIJOBS_WEBHOOK_RETRY_BASE_SECONDS = env_float(
    "AIJOBS_WEBHOOK_RETRY_BASE_SECONDS", 5.0, minimum=0.01
)
# Beat's sweep: hands over retries that are due and messages whose task was never sent or lost.
AIJOBS_WEBHOOK_SWEEP_INTERVAL = env_float("AIJOBS_WEBHOOK_SWEEP_INTERVAL", 1.0, minimum=0.1)

# One attempt is at most two provider calls (the answer and one repair round)
# plus a few writes; the hard limit kills a task stuck beyond that. The lease
# outlives the hard limit, so nobody reclaims a job whose task still runs.
CELERY_TASK_TIME_LIMIT = int(2 * AIJOBS_CLAUDE_TIMEOUT + 10)
AIJOBS_LEASE_SECONDS = CELERY_TASK_TIME_LIMIT + 5

# --- Celery ---------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Rate-limit state in Redis lives under this prefix: deployments sharing one Redis keep apart.
AIJOBS_REDIS_PREFIX = env_str("AIJOBS_REDIS_PREFIX", "aijobs")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_DEFAULT_QUEUE = env_str("AIJOBS_QUEUE", "aijobs")
# Batch items go to a queue of their own: a worker given only AIJOBS_QUEUE (-Q) runs jobs
# submitted on their own, and no batch can keep its CPU busy; a worker given only this queue,
# at a lower CPU priority, runs the batches on what is left (README, "Scaling out").
AIJOBS_BATCH_QUEUE = env_str("AIJOBS_BATCH_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-batch")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# A job survives a worker dying mid-task: the message is acked only when the
# task returns, and a killed pool child puts it back on the queue.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With the broker down, a submission gives up publishing quickly: the job is
# already committed and the reaper publishes it once the broker is back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# Old task results are deleted in batches by aijobs.cleanup, not by Celery's
# one-statement backend_cleanup, which times out on big tables.
CELERY_RESULT_EXPIRES = None
CELERY_BEAT_SCHEDULE = {
    "reap": {"task": "aijobs.reap", "schedule": AIJOBS_REAPER_INTERVAL},
    "cleanup": {"task": "aijobs.cleanup", "schedule": 3600.0},
    # Every second: a round left waiting longer (no worker free) is stale, and the next one
    # does the same work, so expired rounds are dropped instead of piling up.
    "dispatch-batches": {
        "task": "aijobs.dispatch_batches",
        "schedule": AIJOBS_BATCH_DISPATCH_INTERVAL,
        "options": {"expires": 10 * AIJOBS_BATCH_DISPATCH_INTERVAL},
    },
    # Like the dispatch round: a stale sweep is dropped, the next does the same work.
    "sweep-webhooks": {
        "task": "aijobs.sweep_webhooks",
        "schedule": AIJOBS_WEBHOOK_SWEEP_INTERVAL,
        "options": {"expires": 10 * AIJOBS_WEBHOOK_SWEEP_INTERVAL},
    },
}
# Flower needs both event flags to show workers and task states.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True

AIJOBS_VISIBILITY_TIMEOUT = env_int("AIJOBS_VISIBILITY_TIMEOUT", 3600, minimum=10)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": AIJOBS_VISIBILITY_TIMEOUT,
    # kombu scans for unacked messages every interval x throttle seconds;
    # its defaults (10 x 10) delay recovery of a dead worker's job by ~100 s.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}

# RabbitMQ, for deployments that outgrow one Redis: quorum queues are replicated
# and survive a broker node's loss, redeliver a dead consumer's messages at
# once (no visibility timeout), and countdowns use native delayed delivery.
_RABBITMQ = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))
if _RABBITMQ:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    # Quorum queues deliver priorities 5-9 before the rest, the reverse of Redis: batch items
    # go unprioritized, first come first served, a window per batch.
    AIJOBS_BATCH_PRIORITY = None
# Both queues are declared, so a worker started without -Q consumes both. Each is bound by its
# own name: without a routing key Celery binds a queue by the default queue's, and a message for
# either would reach both, and a retry (sent to the routing key it came with) neither.
CELERY_TASK_QUEUES = [
    Queue(name, routing_key=name, queue_arguments={"x-queue-type": "quorum"} if _RABBITMQ else None)
    for name in (CELERY_TASK_DEFAULT_QUEUE, AIJOBS_BATCH_QUEUE)
]

# With Redis, a message unacked for longer than the visibility timeout is
# delivered again: a running task, or a retry waiting out its countdown, would
# then run twice. And a dead worker's job is redelivered after the visibility
# timeout: its lease must have lapsed by then, or the redelivery finds the job
# still held and drops it. Refuse settings that allow either.
_LONGEST_UNACKED = max(AIJOBS_LEASE_SECONDS, CELERY_TASK_TIME_LIMIT + AIJOBS_RETRY_MAX_DELAY)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) and (
    _LONGEST_UNACKED >= AIJOBS_VISIBILITY_TIMEOUT
):
    raise ImproperlyConfigured(
        f"AIJOBS_VISIBILITY_TIMEOUT ({AIJOBS_VISIBILITY_TIMEOUT}s) must exceed "
        f"{_LONGEST_UNACKED}s: the job lease and the task time limit plus AIJOBS_RETRY_MAX_DELAY "
        "(both grow with AIJOBS_CLAUDE_TIMEOUT)"
    )
