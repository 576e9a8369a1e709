"""b: jobs/s of one worker with a full queue, in steady state (the first wave left out),
against concurrency / latency (Little's law), threads and gevent; with the answer streamed
(the product's default) and as plain calls, and the worker's CPU per job in each (issue 11:
streaming within 10% of plain calls).

e: peak RSS of the worker at concurrency 256, measured during b's runs at c256 (`--only e`
runs those alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devtools.bench.scenario import (
    Row,
    Scenario,
    median,
    run_json,
    sim_median,
    sim_note,
    verdict,
)
from devtools.bench.session import Options, Outcome, Session, Usage, say, wait_for_jobs
from devtools.bench.stack import (
    Simulator,
    Web,
    peak_rss_mb,
    start_simulator,
    start_web,
    stopping,
)

# (worker concurrency, simulated latency in ms); both bounds are 64 jobs/s.
LITTLE_CONFIGS = ((64, 1000), (256, 4000))
TARGET = 0.90  # of the bound
STREAMING_CPU_TARGET = 1.10  # worker CPU per job streaming, in times plain calls
# b's two ways to call Claude, as AIJOBS_STREAM_OUTPUT values of the worker.
OUTPUTS = {"streaming": "true", "plain": "false"}
# A simulator serving fewer than this many calls at once would be what b measures, not the worker.
SIM_IN_FLIGHT_FLOOR = 50


def run(session: Session, profiles: dict[str, str]) -> list[LittleRun]:
    only = session.options.only
    configs = [c for c in LITTLE_CONFIGS if "b" in only or ("e" in only and c[0] == 256)]
    return littles_runs(session, configs)


@dataclass(frozen=True)
class LittleRun:
    """A run of b. `rate` is the steady state (see steady_rate) when every job succeeded and
    there was a second wave, else `end_to_end_rate`: first start to last finish.
    """

    pool: str
    output: str  # a key of OUTPUTS
    concurrency: int
    latency_s: float
    rate: float
    end_to_end_rate: float
    submitted: int
    outcome: Outcome
    peak_rss_mb: float
    sim_max_in_flight: int
    usage: Usage

    @property
    def bound(self) -> float:
        return self.concurrency / self.latency_s

    @property
    def efficiency(self) -> float:
        return self.rate / self.bound

    @property
    def worker_cpu_ms_per_job(self) -> float:
        return 1000 * self.usage.cpu.get("worker", 0.0) / self.submitted


def littles_runs(session: Session, configs: Sequence[tuple[int, int]]) -> list[LittleRun]:
    # This web server only fills the queue and is never measured. Where settings keep a
    # connection per thread for AIJOBS_DB_CONN_MAX_AGE, 0 closes them after each request, so
    # every connection the bench role may open is left to the worker under test.
    web_env = session.child_env(AIJOBS_DB_CONN_MAX_AGE="0")
    web = start_web(session.processes, web_env, name="web-b")
    runs = []
    with stopping(session.processes, web.child):
        for concurrency, latency_ms in configs:
            sim = start_simulator(session.processes, session.child_env(), latency_ms)
            with stopping(session.processes, sim.child):
                # Pools and outputs take turns, so a drift of the shared machine favours none.
                for _ in range(session.options.runs):
                    for pool in session.options.little_pools:
                        for output in session.options.little_outputs:
                            runs.append(
                                little_run(session, sim, web, pool, output, concurrency, latency_ms)
                            )
    return runs


def little_run(
    session: Session,
    sim: Simulator,
    web: Web,
    pool: str,
    output: str,
    concurrency: int,
    latency_ms: int,
) -> LittleRun:
    """Fill the queue, then start one worker: its rate from first start to last finish."""
    bound = concurrency / (latency_ms / 1000)
    # Whole waves of `concurrency` jobs, at least two: what steady_rate needs.
    waves = max(2, round(session.options.little_seconds * bound / concurrency))
    jobs = concurrency * waves
    session.fresh_run(sim)
    session.submit(web, jobs)
    worker = session.worker(sim, pool, concurrency, AIJOBS_STREAM_OUTPUT=OUTPUTS[output])
    with stopping(session.processes, worker.child):
        # The rate counts from the first claim, so the start-up before this is not in it.
        meter = session.meter(sim, worker=worker.child.pid)
        outcome = wait_for_jobs(session, jobs, timeout=60 + 3 * jobs / bound)
        rss = peak_rss_mb(worker.child.pid)
        usage = meter.stop()
    first, last = session.table.window()
    end_to_end = outcome.succeeded / (last - first)
    steady = steady_rate(session.table.finish_times(), concurrency) if outcome.all_ok else None
    stats = sim.stats()
    run = LittleRun(
        pool, output, concurrency, latency_ms / 1000, steady or end_to_end, end_to_end, jobs,
        outcome, rss, int(stats["max_in_flight"]), usage,
    )  # fmt: skip
    say(
        f"b {pool} {output} c{concurrency} @{latency_ms} ms: {run.rate:.1f} jobs/s "
        f"({'steady state' if steady else 'no steady span: end to end'}; end to end "
        f"{end_to_end:.1f}) = {run.efficiency:.0%} of {bound:.0f}, "
        f"{outcome.succeeded}/{jobs} succeeded "
        f"({outcome.unacked} left unacked), "
        f"peak RSS {rss:.0f} MiB, sim in flight max {run.sim_max_in_flight}, "
        f"worker CPU {run.worker_cpu_ms_per_job:.2f} ms/job, sim {sim_note(usage)}"
    )
    return run


def steady_rate(finishes: list[float], concurrency: int) -> float | None:
    """Jobs per second with every slot busy: the first wave left out, from the c-th finish on.

    A prefilled queue starts `concurrency` jobs in a burst whose spread (claims queue for
    the GIL) repeats in every later wave and in the drain at the end; measuring from the
    c-th finish to the last one cancels both, so what remains is concurrency / (latency +
    the time a slot spends on each job besides the call). Exact for whole waves (a job
    count that is a multiple of concurrency); None without a second wave.
    """
    if len(finishes) <= concurrency:
        return None
    return (len(finishes) - concurrency) / (finishes[-1] - finishes[concurrency - 1])


def rows(options: Options, runs: list[LittleRun]) -> list[Row]:
    found: list[Row] = []
    for pool in options.little_pools:
        for concurrency, latency_ms in LITTLE_CONFIGS:
            of_config = [r for r in runs if r.pool == pool and r.concurrency == concurrency]
            if of_config and "b" in options.only:
                found += [
                    little_row(of_output, latency_ms)
                    for output in options.little_outputs
                    if (of_output := [r for r in of_config if r.output == output])
                ]
                found += [streaming_cpu_row(of_config)] if _both_outputs(of_config) else []
    pools = [pool for pool in options.little_pools if _c256(runs, pool)]
    return (
        found
        + [in_flight_row(runs, pool) for pool in pools]
        + [rss_row(runs, pool) for pool in pools]
    )


def streaming_cpu_row(runs: list[LittleRun]) -> Row:
    """Worker CPU per job streaming against plain calls, each run's pair side by side."""
    first = runs[0]
    streaming, plain = _cpu_of(runs, "streaming"), _cpu_of(runs, "plain")
    ratio = median(streaming) / median(plain)
    return Row(
        f"b. worker CPU per job streaming, {first.pool} c{first.concurrency}",
        f"{median(streaming):.2f} ms",
        f"plain calls: {median(plain):.2f} ms",
        f"{ratio:.2f}x",
        f"<= {STREAMING_CPU_TARGET:.2f}x",
        verdict(ratio <= STREAMING_CPU_TARGET),
        runs=", ".join(f"{s:.2f}/{p:.2f}" for s, p in zip(streaming, plain, strict=False)),
    )


def _cpu_of(runs: list[LittleRun], output: str) -> list[float]:
    """Worker CPU ms per job of the runs with this output, in run order."""
    return [r.worker_cpu_ms_per_job for r in runs if r.output == output]


def _both_outputs(runs: list[LittleRun]) -> bool:
    return {r.output for r in runs} == set(OUTPUTS)


def in_flight_row(runs: list[LittleRun], pool: str) -> Row:
    """The simulator keeps up with a worker's slots (a floor `make test` leaves to the bench)."""
    c256 = _c256(runs, pool)
    peak = median([r.sim_max_in_flight for r in c256])
    return Row(
        f"b. simulator's peak requests in flight, {pool} c256",
        f"{peak:.0f}",
        target=f">= {SIM_IN_FLIGHT_FLOOR}",
        verdict=verdict(peak >= SIM_IN_FLIGHT_FLOOR),
        runs=", ".join(str(r.sim_max_in_flight) for r in c256),
    )


def little_row(runs: list[LittleRun], latency_ms: int) -> Row:
    first = runs[0]
    efficiency = median([r.efficiency for r in runs])
    lost = sum(r.outcome.unfinished + r.outcome.failed for r in runs)
    config = f"{first.pool} {first.output} c{first.concurrency} @ {latency_ms / 1000:g} s"
    return Row(
        f"b. jobs/s steady, 1 worker, {config}",
        f"{median([r.rate for r in runs]):.1f}",
        f"bound {first.bound:.0f} jobs/s",
        f"{efficiency:.1%}",
        f">= {TARGET:.0%}",
        verdict(efficiency >= TARGET) + (f" ({lost} jobs lost)" if lost else ""),
        sim_median([r.usage for r in runs]),
        ", ".join(
            f"{r.efficiency:.0%} (end to end {r.end_to_end_rate / r.bound:.0%})" for r in runs
        ),
    )


def rss_row(runs: list[LittleRun], pool: str) -> Row:
    c256 = _c256(runs, pool)
    return Row(
        f"e. worker peak RSS, {pool} c256",
        f"{median([r.peak_rss_mb for r in c256]):.0f} MiB",
        runs=", ".join(f"{r.peak_rss_mb:.0f}" for r in c256),
    )


def headline(options: Options, runs: list[LittleRun]) -> dict[str, Any]:
    """b's figures for one pool: --pool when b measured it, else the first of --little-pools.

    The efficiencies are the product's default output (streaming when it ran); the worker
    CPU per job of each output is at the lowest concurrency measured.
    """
    pool = options.pool if options.pool in options.little_pools else options.little_pools[0]
    output = options.little_outputs[0]
    of_pool = [r for r in runs if r.pool == pool] if "b" in options.only else []

    def efficiency(concurrency: int) -> float | None:
        of_config = [r for r in of_pool if r.concurrency == concurrency and r.output == output]
        return round(median([r.efficiency for r in of_config]), 4) if of_config else None

    def cpu(output: str) -> float | None:
        lowest = [r for r in of_pool if r.concurrency == of_pool[0].concurrency] if of_pool else []
        of_output = _cpu_of(lowest, output)
        return round(median(of_output), 3) if of_output else None

    c256 = _c256(runs, pool)
    return {
        "littles_law_efficiency_c64": efficiency(64),
        "littles_law_efficiency_c256": efficiency(256),
        "streaming_worker_cpu_ms_per_job": cpu("streaming"),
        "plain_worker_cpu_ms_per_job": cpu("plain"),
        "worker_peak_rss_mb_c256": round(median([r.peak_rss_mb for r in c256]), 1)
        if c256
        else None,
        "b_pool": pool,
        "b_output": output,
    }


def _c256(runs: list[LittleRun], pool: str) -> list[LittleRun]:
    return [r for r in runs if r.pool == pool and r.concurrency == 256]


SCENARIO = Scenario(
    key="b",
    letters=("b", "e"),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, bound=r.bound, efficiency=r.efficiency),
)
