"""docker-compose.yml and .env.example agree with the code (no Docker engine is needed)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from devtools.web import ASGI_APP, SERVER_ARGS, web_command

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, service in SERVICES.items() if "build" in service]
ENV_READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "env_json"}


def command_of(service: dict) -> list[str]:
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if words[:2] == ["sh", "-c"]:
        # The script's last `exec` runs the real command.
        words = shlex.split(words[2].rsplit("exec ", 1)[-1])
    return words


def env_example_values() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [
        line.split("=", 1) for line in lines if line and not line.startswith("#") and "=" in line
    ]
    return dict(pairs)


def env_example_names() -> set[str]:
    return set(env_example_values())


def settings_env_names() -> set[str]:
    tree = ast.parse((ROOT / "webapp" / "settings.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ENV_READERS
        and isinstance(node.args[0], ast.Constant)
    }


def test_the_app_services_are_all_there():
    assert set(APP_SERVICES) == {"migrate", "web", "worker", "batch-worker", "beat", "flower"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_command_points_at_something_that_exists(name):
    words = command_of(SERVICES[name])
    program = words[0]
    if program == "python":
        assert words[1] == "manage.py"
        assert (ROOT / "manage.py").exists()
        assert words[2] in get_commands(), f"no management command {words[2]!r}"
    elif program == "celery":
        assert words[1:3] == ["-A", "celery_app"]
        assert importlib.import_module("celery_app").app.main == "aijobs"
        assert words[3] in {"worker", "beat", "flower"}
    elif program == "gunicorn":
        module, _, attribute = words[1].partition(":")
        assert hasattr(importlib.import_module(module), attribute or "application")
        assert module == ASGI_APP
    else:
        pytest.fail(f"{name} runs an unexpected program {program!r}")


@pytest.mark.parametrize(
    ("service", "queue"), [("worker", "AIJOBS_QUEUE"), ("batch-worker", "AIJOBS_BATCH_QUEUE")]
)
def test_each_worker_consumes_the_one_queue_it_is_for(service, queue):
    words = command_of(SERVICES[service])
    assert words[words.index("-Q") + 1] == env_example_values()[queue]


def test_the_batch_worker_yields_the_cpu_to_the_single_jobs():
    assert SERVICES["batch-worker"]["cpu_shares"] < 1024, "1024 is the default weight"


def test_flower_is_never_started_without_basic_auth():
    assert "FLOWER_BASIC_AUTH" in SERVICES["flower"]["command"][-1]
    assert SERVICES["flower"]["ports"][0].startswith("127.0.0.1:")


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_stateful_services_have_healthchecks_and_volumes(name):
    assert SERVICES[name]["healthcheck"]["test"]
    volume = SERVICES[name]["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]


def test_the_env_file_lists_every_variable_the_settings_read():
    missing = settings_env_names() - env_example_names()
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_every_app_service_reads_the_one_env_file():
    for name in APP_SERVICES:
        assert SERVICES[name]["env_file"] == ".env"
        assert set(SERVICES[name]["environment"]) <= env_example_names()


def test_the_image_and_compose_run_the_web_server_the_demo_and_tests_run():
    """One server everywhere: the command devtools.web builds for the demo, bench and tests."""
    built = web_command("0.0.0.0:8000")
    served = command_of(SERVICES["web"])
    assert served[:2] == ["gunicorn", ASGI_APP]
    assert set(SERVER_ARGS) <= set(served)
    assert built[built.index("gunicorn") + 1] == ASGI_APP
    dockerfile = (ROOT / "Dockerfile").read_text()
    image = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert image[:2] == ["gunicorn", ASGI_APP]
    assert set(SERVER_ARGS) <= set(image)


def test_settings_that_let_redis_redeliver_a_running_job_refuse_to_load():
    env = {
        **os.environ,
        "DJANGO_DEBUG": "true",
        "AIJOBS_CLAUDE_TIMEOUT": "60",
        "AIJOBS_VISIBILITY_TIMEOUT": "100",
    }
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/0"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "AIJOBS_VISIBILITY_TIMEOUT (100s) must exceed" in result.stderr
