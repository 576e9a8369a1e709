"""The simulator as a process: `python -m devtools.claude_sim`."""

from __future__ import annotations

from tests.devtools.claude_sim.helpers import (
    DEADLINE_SECONDS,
    http_json,
    start_simulator,
)


def test_prints_one_listening_line_and_exits_cleanly_on_sigterm() -> None:
    proc, url = start_simulator()
    assert http_json(url + "/_sim/health") == (200, {"status": "ok"})

    proc.terminate()

    assert proc.wait(timeout=DEADLINE_SECONDS) == 0
    assert proc.stdout is not None
    assert proc.stdout.read() == ""
