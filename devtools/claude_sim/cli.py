"""The command line: `python -m devtools.claude_sim --port 0 [--latency-ms N] ...`."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from devtools.claude_sim.server import BANNER, DEFAULT_HOST, run_server
from devtools.claude_sim.simulator import SimOptions


def fault_rate_arg(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.claude_sim", description="Simulate the Claude Messages API."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--port", type=non_negative_int, default=0, help="0 (default) picks a free port"
    )
    parser.add_argument(
        "--latency-ms", type=non_negative_int, default=0, help="default answer latency"
    )
    parser.add_argument(
        "--fault-rate", type=fault_rate_arg, default=0.0, help="share of random 429/529/500 answers"
    )
    parser.add_argument(
        "--rpm", type=non_negative_int, default=0, help="requests per minute, 0: unlimited"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    options = SimOptions(args.latency_ms, args.fault_rate, args.rpm, args.seed)

    def announce(url: str) -> None:
        print(f"{BANNER}{url}", flush=True)

    await run_server(args.host, args.port, options, stop, announce)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_main(parse_args(argv)))
    return 0
