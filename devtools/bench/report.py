"""The report: the table on stdout and in bench-results/latest.md, and latest.json."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import asdict
from typing import Any

from devtools.bench.load import load_generator
from devtools.bench.registry import SCENARIOS
from devtools.bench.scenario import Results, Row
from devtools.bench.session import Options
from devtools.bench.stack import RESULTS_DIR


def publish(options: Options, results: Results) -> None:
    rows = table_rows(options, results)
    text = render(rows) + "\n" + cpu_breakdown(results)
    report = json_report(options, results)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = report["date"].replace(":", "").replace("-", "")[:15]
    for name in ("latest", f"bench-{stamp}"):
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / "latest.md").write_text(text)
    print(text)
    for name, path in results.profiles.items():
        print(f"profile {name}: {path}")
    print(f"bench took {results.seconds / 60:.1f} min; results in {RESULTS_DIR}/latest.json")


def table_rows(options: Options, results: Results) -> list[Row]:
    return [
        row
        for scenario in SCENARIOS
        for row in scenario.rows(options, results.runs.get(scenario.key, []))
    ]


def render(rows: list[Row]) -> str:
    header = Row("figure (median of runs)", "value", "baseline", "ratio", "target", "", "sim CPU")
    lines = [[*asdict(header).values()], *([*asdict(row).values()] for row in rows)]
    lines[0][-1] = "runs"
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out) + "\n"


def cpu_breakdown(results: Results) -> str:
    """Where the CPU went, per job in a and per request in d: which process to look at first."""
    lines = [
        line
        for scenario in SCENARIOS
        if results.runs.get(scenario.key)
        for line in scenario.cpu_lines(results.runs[scenario.key])
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def json_report(options: Options, results: Results) -> dict[str, Any]:
    report: dict[str, Any] = {
        **headline(options, results),
        "cores": os.cpu_count(),
        "versions": versions(),
        "pool": options.pool,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "note": options.note,
        "load_generator": load_generator(),
        "bench_seconds": round(results.seconds),
        "options": asdict(options),
        "profiles": results.profiles,
        "runs": {
            scenario.key: [scenario.run_json(run) for run in results.runs.get(scenario.key, [])]
            for scenario in SCENARIOS
        },
    }
    return report


def headline(options: Options, results: Results) -> dict[str, Any]:
    """The keys the issue names, each scenario's; None for a scenario that was not run."""
    found: dict[str, Any] = {}
    for scenario in SCENARIOS:
        found |= scenario.headline(options, results.runs.get(scenario.key, []))
    return found


def revision() -> str:
    """The commit measured (with -dirty for local changes), from git or AIJOBS_BENCH_REVISION."""
    if os.environ.get("AIJOBS_BENCH_REVISION"):
        return os.environ["AIJOBS_BENCH_REVISION"]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=RESULTS_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


def versions() -> dict[str, str]:
    packages = {
        "django": "Django",
        "celery": "celery",
        "kombu": "kombu",
        "redis-py": "redis",
        "anthropic": "anthropic",
        "psycopg": "psycopg",
        "gunicorn": "gunicorn",
        "gevent": "gevent",
        "django-celery-results": "django_celery_results",
        "django-ninja": "django-ninja",
        "pydantic": "pydantic",
    }
    found = {"python": platform.python_version()}
    for label, package in packages.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[label] = importlib.metadata.version(package)
    return found
