"""Typed environment readers fail loudly on nonsense."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import database_from_url, env_bool, env_float, env_int, env_json, env_str


@pytest.mark.parametrize(
    ("reader", "raw"),
    [
        (env_int, "ten"),
        (env_int, "-1"),
        (env_float, "fast"),
        (env_bool, "maybe"),
        (env_json, "{oops"),
    ],
)
def test_nonsense_is_refused(monkeypatch, reader, raw):
    monkeypatch.setenv("AIJOBS_PROBE", raw)
    with pytest.raises(ImproperlyConfigured, match="AIJOBS_PROBE"):
        reader("AIJOBS_PROBE", 1)


def test_unset_and_empty_mean_the_default(monkeypatch):
    monkeypatch.setenv("AIJOBS_PROBE", "")
    assert env_int("AIJOBS_PROBE", 7) == 7
    assert env_str("AIJOBS_PROBE", "x") == "x"
    monkeypatch.setenv("AIJOBS_PROBE", "2.5")
    assert env_float("AIJOBS_PROBE", 1.0) == 2.5


def test_database_urls_in_both_forms():
    tcp = database_from_url("postgresql://app:s%40cret@db.internal:5433/aijobs")
    socket = database_from_url("postgresql://postgres@/aijobs?host=/run/postgresql&port=5432")

    assert (tcp["USER"], tcp["PASSWORD"], tcp["HOST"], tcp["PORT"], tcp["NAME"]) == (
        "app", "s@cret", "db.internal", "5433", "aijobs",
    )  # fmt: skip
    assert (socket["HOST"], socket["PORT"], socket["NAME"]) == ("/run/postgresql", "5432", "aijobs")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://x@y/z")


def test_a_test_run_has_a_queue_and_redis_keys_of_its_own(settings):
    # Shared defaults would let two runs on one Redis take each other's messages.
    assert settings.CELERY_TASK_DEFAULT_QUEUE.startswith("aijobs-test-")
    assert settings.AIJOBS_REDIS_PREFIX == settings.CELERY_TASK_DEFAULT_QUEUE


@pytest.mark.parametrize(
    ("modules", "reason"),
    [("no.such.module", "No module named"), ("tests.kinds", "NAME must match")],
)
def test_kind_modules_that_cannot_be_kinds_stop_the_settings_loading(modules, reason):
    loading = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parents[2],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
            "AIJOBS_KIND_MODULES": modules,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert loading.returncode != 0
    assert "ImproperlyConfigured: AIJOBS_KIND_MODULES:" in loading.stderr
    assert reason in loading.stderr
