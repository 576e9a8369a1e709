"""b's floor: what a streamed answer costs the SDK alone, with no platform code around it.

b's target asks a worker's CPU per job streaming to stay within 10% of plain calls. This
measures, in a process of its own, what the SDK and its HTTP stack spend on one call of b's
jobs (a summarize request, the same simulator at b's c64 latency, from as many threads) in
three ways: a plain `messages.create`, the same call streamed with only its bytes read
(`with_streaming_response`: the HTTP stack and nothing else), and streamed with the SDK's
own events iterated (`create(stream=True)`). What the second costs above the first is the
least any streaming worker pays, before a single event is decoded.

Run by the bench (`python -m devtools.bench.b_sdk_floor URL THREADS CALLS` prints JSON).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.bench.b_littles_law import LITTLE_CONFIGS
from devtools.bench.scenario import Row, Scenario, median, run_json
from devtools.bench.session import Session, say
from devtools.bench.stack import BenchError, Simulator, start_simulator, stopping

MODES = ("plain", "bytes", "events")
# Three modes of at most a few dozen seconds each.
CHILD_TIMEOUT = 300.0


@dataclass(frozen=True)
class FloorRun:
    """CPU ms per call of each mode, and the text deltas one streamed answer had."""

    concurrency: int
    latency_ms: int
    cpu_ms: dict[str, float]
    deltas_per_call: float

    def above_plain(self, mode: str) -> float:
        return self.cpu_ms[mode] - self.cpu_ms["plain"]


def run(session: Session, profiles: dict[str, str]) -> list[FloorRun]:
    concurrency, latency_ms = LITTLE_CONFIGS[0]
    calls = concurrency * max(2, round(session.options.little_seconds * 1000 / latency_ms))
    sim = start_simulator(session.processes, session.child_env(), latency_ms)
    with stopping(session.processes, sim.child):
        return [
            floor_run(session, sim, concurrency, latency_ms, calls)
            for _ in range(session.options.runs)
        ]


def floor_run(
    session: Session, sim: Simulator, concurrency: int, latency_ms: int, calls: int
) -> FloorRun:
    command = [sys.executable, "-m", "devtools.bench.b_sdk_floor", sim.url]
    command += [str(concurrency), str(calls)]
    child = session.processes.start("sdk-floor", command, session.child_env(sim), pipe_stdout=True)
    with stopping(session.processes, child):
        assert child.proc.stdout is not None
        line = child.proc.stdout.readline()
        returncode = child.proc.wait(timeout=CHILD_TIMEOUT)
    if returncode != 0 or not line:
        raise BenchError(f"the SDK floor's calls failed (see {child.log})")
    found = json.loads(line)
    floor = FloorRun(concurrency, latency_ms, found["cpu_ms"], found["deltas_per_call"])
    say(
        f"b SDK alone c{concurrency} @{latency_ms} ms: "
        + ", ".join(f"{mode} {floor.cpu_ms[mode]:.2f}" for mode in MODES)
        + f" ms/call, {floor.deltas_per_call:.0f} text deltas a call"
    )
    return floor


def rows(options: Any, runs: list[FloorRun]) -> list[Row]:
    if not runs:
        return []
    first = runs[0]
    plain = median([r.cpu_ms["plain"] for r in runs])
    config = f"{first.concurrency} threads @ {first.latency_ms / 1000:g} s"
    described = {
        "bytes": "streamed, its bytes read and nothing else",
        "events": "streamed, the SDK's events iterated",
    }
    return [
        Row(
            f"b. the SDK alone, {config}: CPU per call {what}",
            f"+{median([r.above_plain(mode) for r in runs]):.2f} ms",
            f"plain call: {plain:.2f} ms",
            runs=", ".join(f"{r.cpu_ms[mode]:.2f}/{r.cpu_ms['plain']:.2f}" for r in runs),
        )
        for mode, what in described.items()
    ]


def headline(options: Any, runs: list[FloorRun]) -> dict[str, Any]:
    def cpu(mode: str) -> float | None:
        return round(median([r.cpu_ms[mode] for r in runs]), 3) if runs else None

    return {
        "sdk_plain_cpu_ms_per_call": cpu("plain"),
        "sdk_stream_bytes_cpu_ms_per_call": cpu("bytes"),
        "sdk_stream_events_cpu_ms_per_call": cpu("events"),
    }


SCENARIO = Scenario(
    key="b_sdk",
    letters=("b",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=run_json,
)

# --- the child: the calls themselves ---------------------------------------------------


def _request() -> dict[str, Any]:
    """A call as the worker makes it for b's jobs: their text, kind, system prompt and schema."""
    import anthropic
    from django.conf import settings

    from devtools.bench.load import job_body
    from jobs import kinds

    kind = kinds.get_kind("summarize")
    job_input = kind.Input.model_validate(job_body(0, "sdk-floor", kind)["input"])
    schema = anthropic.transform_schema(kind.output_model(job_input))
    return {
        "model": settings.AIJOBS_MODELS[kind.NAME],
        "max_tokens": kind.MAX_TOKENS,
        "system": [
            {"type": "text", "text": kind.SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": kind.build_prompt(job_input)}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }


def _calls(base_url: str) -> dict[str, Callable[[], int]]:
    """Each mode's call; each returns the text deltas it saw (0 for a plain call)."""
    import anthropic

    client = anthropic.Anthropic(api_key="sk-bench", base_url=base_url, max_retries=0)
    request = _request()

    def plain() -> int:
        client.messages.create(**request)
        return 0

    def read_bytes() -> int:
        with client.messages.with_streaming_response.create(**request, stream=True) as answer:
            for _ in answer.iter_bytes():
                pass
        return 0

    def events() -> int:
        stream = client.messages.create(**request, stream=True)
        return sum(1 for event in stream if event.type == "content_block_delta")

    return {"plain": plain, "bytes": read_bytes, "events": events}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(call: Callable[[], int], threads: int, calls: int) -> tuple[float, float]:
    """CPU ms per call, and text deltas per call, of `calls` calls from `threads` threads."""
    call()  # connections and caches warm before the clock starts
    left, lock, deltas = [calls], threading.Lock(), []

    def loop() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            deltas.append(call())

    started = _cpu_seconds()
    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return 1000 * (_cpu_seconds() - started) / calls, sum(deltas) / calls


def main(argv: list[str]) -> None:
    base_url, threads, calls = argv[0], int(argv[1]), int(argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    measured = {mode: _measure(call, threads, calls) for mode, call in _calls(base_url).items()}
    print(json.dumps({
        "cpu_ms": {mode: round(cpu, 3) for mode, (cpu, _) in measured.items()},
        "deltas_per_call": measured["events"][1],
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
