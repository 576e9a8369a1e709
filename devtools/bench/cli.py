"""`make bench`: the platform's overhead, concurrency, added latency, status polling and memory.

Run under `python -m devtools.servers run --`, which provides DATABASE_URL and REDIS_URL
(`make bench BENCH_ARGS="--quick"` for a smoke run). The driver uses a database
(`aijobs_bench`, owned by a role capped at --db-connection-limit connections) and a Redis
database number (--redis-db) of its own, starts the Claude simulator, gunicorn and Celery
workers as each scenario needs them, and stops every one by PID. It prints one table and
writes bench-results/latest.json (and a dated copy); PERFORMANCE.md explains the figures.

    a  jobs/s end to end (HTTP submit -> finished in Postgres) at zero simulated latency,
       against bare Celery (no-op task, same broker and worker settings) in the same run
    b  jobs/s of one worker with a full queue, in steady state (the first wave left out),
       against concurrency / latency (Little's law), threads and gevent, answers streamed
       and plain; the worker's CPU per job streaming against plain calls, and what the SDK
       alone spends on a streamed call against a plain one (its floor)
    c  submit-to-finished time minus the simulated latency, sequential jobs, p50 and p99
    d  GET /api/v1/jobs/{id} requests/s and p99 against a constant Django view, same server
    e  peak RSS of the worker at concurrency 256 (measured during b)
    f  items/s POST /batches accepts for 10,000 items as JSON and as a CSV upload (request to
       201), and the web process's peak RSS meanwhile
    g  items/s of a 5,000-item batch at zero simulated latency, against a's jobs/s, same run
    h  c's added latency of single jobs while another user's 5,000-item batch runs, p50 and
       p99, against c on the idle system, same run

Every figure is the median of --runs runs; every ratio is taken within a run.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Sequence
from types import FrameType

from devtools.bench.b_littles_law import OUTPUTS
from devtools.bench.registry import LETTERS, SCENARIOS
from devtools.bench.report import publish
from devtools.bench.scenario import Results
from devtools.bench.session import Options, Session, open_session, say
from devtools.bench.stack import BenchError, Processes

QUICK = {
    "runs": 1,
    "jobs": 200,
    "little_seconds": 6.0,
    "latency_jobs": 20,
    "status_seconds": 2.0,
    "batch_items": 500,
    "accept_items": 2000,
}


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = Options(only=LETTERS)
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny counts and one run: a smoke test")
    add("--only", default=",".join(LETTERS), help="scenarios to run, e.g. a,c")
    add("--runs", type=int, help=f"runs per figure (default {defaults.runs})")
    add("--jobs", type=int, help=f"jobs per run of a (default {defaults.jobs})")
    add(
        "--pool",
        choices=("threads", "gevent"),
        default=defaults.pool,
        help="pool of a and c, and of b's figures in latest.json (default threads)",
    )
    add("--little-pools", default="threads,gevent", help="pools measured in b (both by default)")
    add(
        "--little-outputs",
        default="streaming,plain",
        help="calls measured in b: streamed answers, plain ones (both by default; the first "
        "gives b's efficiencies in latest.json)",
    )
    add("--concurrency", type=int, default=defaults.concurrency, help="worker's -c in a, c (16)")
    add("--clients", type=int, default=defaults.clients, help="client threads submitting jobs")
    add("--little-seconds", type=float, help="length of a run of b at the bound (default 12)")
    add("--latency-jobs", type=int, help=f"jobs per run of c (default {defaults.latency_jobs})")
    add("--latency-ms", type=int, default=defaults.latency_ms, help="simulated latency in c")
    add("--status-seconds", type=float, help="length of a load run in d (default 8)")
    add("--batch-items", type=int, help=f"items of the batch in g and h ({defaults.batch_items})")
    add(
        "--batch-max-in-flight",
        type=int,
        default=defaults.batch_max_in_flight,
        help="h's AIJOBS_BATCH_MAX_IN_FLIGHT (default: half of --concurrency, as the "
        "deployments; 0: no cap)",
    )
    add("--accept-items", type=int, help=f"items of f's submissions ({defaults.accept_items})")
    add("--connections", type=int, default=defaults.connections, help="connections in d")
    add("--profile", action="store_true", help="also profile a and d with py-spy")
    add(
        "--db-connection-limit",
        type=int,
        default=defaults.db_connection_limit,
        help="connections the bench role may open (default 80), so a shared server keeps room",
    )
    add("--redis-db", type=int, default=defaults.redis_db, help="Redis database of the bench")
    add("--note", default="", help="free text kept in the JSON (e.g. which fixes are applied)")
    return _options(parser, parser.parse_args(argv))


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    if not only or set(only) - set(LETTERS):
        parser.error(f"--only takes letters of {','.join(LETTERS)}")
    counts = {**(QUICK if args.quick else {})}
    names = (
        "runs", "jobs", "little_seconds", "latency_jobs", "status_seconds", "batch_items",
        "accept_items",
    )  # fmt: skip
    for name in names:
        if getattr(args, name) is not None:
            counts[name] = getattr(args, name)
    return Options(
        only=only,
        pool=args.pool,
        little_pools=tuple(args.little_pools.split(",")),
        little_outputs=_little_outputs(parser, args.little_outputs),
        concurrency=args.concurrency,
        clients=args.clients,
        latency_ms=args.latency_ms,
        connections=args.connections,
        profile=args.profile,
        db_connection_limit=args.db_connection_limit,
        redis_db=args.redis_db,
        note=args.note,
        batch_max_in_flight=args.batch_max_in_flight,
        **counts,
    )


def _little_outputs(parser: argparse.ArgumentParser, value: str) -> tuple[str, ...]:
    outputs = tuple(part.strip() for part in value.split(",") if part.strip())
    if not outputs or set(outputs) - set(OUTPUTS):
        parser.error(f"--little-outputs takes {','.join(OUTPUTS)}")
    return outputs


def run_scenarios(session: Session) -> Results:
    results = Results()
    for scenario in SCENARIOS:
        if scenario.selected(session.options.only):
            results.runs[scenario.key] = scenario.run(session, results.profiles)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    processes = Processes()
    session: Session | None = None
    started = time.monotonic()
    try:
        session = open_session(options, processes)
        results = run_scenarios(session)
    except KeyboardInterrupt:
        say("interrupted: stopping what was started")
        return 130
    except BenchError as error:
        say(f"failed: {error}")
        return 1
    finally:
        processes.stop_all()
        if session is not None:
            session.close()
    results.seconds = time.monotonic() - started
    publish(options, results)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
