"""One simulator process for the package's tests; each test gets it with its state zeroed."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.devtools.claude_sim.helpers import API_KEY, http_json, start_simulator, stop_simulator


@pytest.fixture(scope="package")
def sim_process() -> Iterator[str]:
    proc, url = start_simulator("--seed", "1")
    yield url
    stop_simulator(proc)


@pytest.fixture
def sim(sim_process: str) -> str:
    """The simulator's base URL, with its statistics, counters and cache zeroed."""
    http_json(sim_process + "/_sim/reset", method="POST")
    return sim_process


@pytest.fixture
def client(sim: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=API_KEY, base_url=sim, max_retries=0) as sdk:
        yield sdk
