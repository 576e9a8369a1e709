"""Sampling profiles of the benchmark's processes with py-spy, and a text summary of them.

py-spy is not a project dependency: `.venv/bin/pip install py-spy` to use `--profile`.
It samples from outside the process, pausing it for each sample: `--nonblocking` would
slow it less but reads stacks that change under it, which put most samples on trivial
functions. So profiles come from a separate run, never from a measured one.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.stack import RESULTS_DIR, ROOT, BenchError, Child, Processes

# Each profiled process is recorded twice: the thread holding the GIL, and every active thread.
PROFILE_VIEWS = {"gil": True, "active": False}
SAMPLE_RATE = 200  # per second
TOP = 25
# "func (path/to/file.py:123)": py-spy's frame; the line number is dropped to group by function.
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
SHORTEN = ((re.compile(r".*/site-packages/"), ""), (re.compile(r".*/lib/python3\.\d+/"), ""))
PROJECT_PACKAGES = ("jobs/", "workers/", "webapp/", "celery_app.py")
# Framework frames whose callee says what the framework is doing: Celery's task tracer (result
# backend, signals), its consumer loop (messages, acks, events), a web request.
ANCHORS = ("trace_task", "create_loop", "on_task_received", "handle_request", "Operation.run")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@dataclass
class Recording:
    child: Child
    raw: Path


def start_recording(
    processes: Processes, pid: int, raw: Path, *, subprocesses: bool = False, gil: bool = False
) -> Recording:
    """Sample pid (and its children) until stop_recording; collapsed stacks go to raw.

    gil: only the thread holding the GIL, i.e. where a GIL-bound process spends its CPU.
    Otherwise every thread py-spy finds active, which includes threads waiting inside C
    code (psycopg's wait for PostgreSQL's answer shows as Connection.wait): where time goes.
    """
    command = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "-o", str(raw)]
    command += ["--rate", str(SAMPLE_RATE)]
    if subprocesses:
        command.append("--subprocesses")
    if gil:
        command.append("--gil")
    child = processes.start(f"py-spy-{raw.stem}", command, {"PATH": "/usr/bin:/bin"})
    return Recording(child, raw)


def stop_recording(processes: Processes, recording: Recording) -> str:
    """Stop sampling (SIGINT makes py-spy write its file) and summarize what it saw."""
    processes.stop(recording.child, signal.SIGINT)
    if not recording.raw.exists():
        raise BenchError(f"py-spy wrote nothing; see {recording.child.log}")
    summary = summarize(recording.raw.read_text())
    recording.raw.with_suffix(".txt").write_text(summary)
    return summary


def summarize(collapsed: str, top: int = TOP) -> str:
    """Where the samples went: our functions, the library calls they make, and self time.

    Inclusive shares count a sample once per function on its stack; "calls out" groups
    each sample under the first library function called by the innermost project function.
    """
    project: collections.Counter[str] = collections.Counter()
    calls_out: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    everything: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, count in _stacks(collapsed):
        total += count
        own[stack[-1]] += count
        for frame in set(stack):
            everything[frame] += count
            if _is_project(frame):
                project[frame] += count
        calls_out[_call_out(stack)] += count
    if total == 0:
        return "no samples (the process was idle or py-spy could not read it)\n"
    return "\n".join(
        [
            f"{total} samples at {SAMPLE_RATE}/s",
            "",
            _table("project functions, inclusive", project, total, top),
            _table(
                "calls out of project code (caller -> library), inclusive", calls_out, total, top
            ),
            _table("self: executing", own, total, top),
            _table("all functions, inclusive", everything, total, 2 * top),
        ]
    )


def _stacks(collapsed: str) -> Iterator[tuple[list[str], int]]:
    """Each sampled stack as functions, outermost first, and how many samples it got."""
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield [_function(frame) for frame in stack.split(";")], int(count_text)


def _call_out(stack: list[str]) -> str:
    inner = max((i for i, frame in enumerate(stack) if _is_project(frame)), default=None)
    if inner is None:
        return "(no project code: framework) " + _first_named(stack)
    if inner == len(stack) - 1:
        return f"{stack[inner]} itself"
    return f"{_name(stack[inner])} -> {stack[inner + 1]}"


def _first_named(stack: list[str]) -> str:
    """What a framework-only stack is doing: the frame below the innermost anchor, or the leaf."""
    for index in range(len(stack) - 2, -1, -1):
        if _name(stack[index]).endswith(ANCHORS):
            return f"{_name(stack[index])} -> {stack[index + 1]}"
    return stack[-1] if stack else "?"


def _is_project(function: str) -> bool:
    return any(f"({package}" in function for package in PROJECT_PACKAGES)


def _name(function: str) -> str:
    return function.partition(" (")[0]


def _function(frame: str) -> str:
    match = FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file").replace(f"{ROOT}/", "")
    for pattern, replacement in SHORTEN:
        path = pattern.sub(replacement, path)
    return f"{match.group('func')} ({path})"


def _table(title: str, counts: collections.Counter[str], total: int, top: int) -> str:
    rows = (f"{100 * n / total:6.1f}%  {name}" for name, n in counts.most_common(top))
    return "\n".join([title, *rows, ""])


@contextlib.contextmanager
def recording(
    processes: Processes, pid: int, name: str, *, subprocesses: bool = False
) -> Iterator[None]:
    """Record both views of pid (GIL holder, active threads) into bench-results/profile-*."""
    records = [
        start_recording(
            processes, pid, profile_path(name, view), subprocesses=subprocesses, gil=gil
        )
        for view, gil in PROFILE_VIEWS.items()
    ]
    try:
        yield
    finally:
        for record in records:
            stop_recording(processes, record)


def profile_path(name: str, view: str) -> Path:
    return RESULTS_DIR / f"profile-{name}-{view}.raw"


def profile_files(*names: str) -> dict[str, str]:
    return {
        f"{name}-{view}": str(profile_path(name, view).with_suffix(".txt"))
        for name in names
        for view in PROFILE_VIEWS
    }
