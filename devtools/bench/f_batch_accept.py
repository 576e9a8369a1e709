"""f: items/s accepted by POST /batches for a 10,000-item batch, as a JSON body and as the same
items in an uploaded CSV file, request sent to 201 received (the server's time on loopback),
and the web process's peak RSS meanwhile.

No worker runs: what is measured is validation and the bulk INSERTs of one transaction.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from devtools.bench.load import ApiClient, batch_json, batch_texts, batch_upload
from devtools.bench.scenario import Row, Scenario, median, run_json
from devtools.bench.session import Options, Session, say
from devtools.bench.stack import Web, children_of, peak_rss_mb, start_web, stopping

# Items of the submission that warms the web server up before the measured ones: the peak RSS
# after it is the baseline of f's.
WARMUP_ITEMS = 10


@dataclass(frozen=True)
class AcceptRun:
    items: int
    json_seconds: float
    upload_seconds: float
    web_peak_rss_mb: float
    web_warm_rss_mb: float

    @property
    def json_rate(self) -> float:
        return self.items / self.json_seconds

    @property
    def upload_rate(self) -> float:
        return self.items / self.upload_seconds


def run(session: Session, profiles: dict[str, str]) -> list[AcceptRun]:
    return [accept_run(session, index) for index in range(session.options.runs)]


def accept_run(session: Session, index: int) -> AcceptRun:
    """A fresh web server (its peak RSS is this run's), warmed up, then one submission of each."""
    session.fresh_run()
    web = start_web(session.processes, session.child_env(), name="web-f")
    with stopping(session.processes, web.child):
        client = ApiClient(web.url, session.token)
        for submit in (submit_json, submit_upload):
            submit(client, batch_texts(WARMUP_ITEMS, f"warmup-{index}"))
        warm = web_peak_rss_mb(web)
        texts = batch_texts(session.options.accept_items, f"{os.getpid()}-f{index}")
        # Alternate which goes first, so a drift of the shared machine favours neither.
        order = (submit_json, submit_upload) if index % 2 == 0 else (submit_upload, submit_json)
        seconds = {submit: submit(client, texts) for submit in order}
        peak = web_peak_rss_mb(web)
    run = AcceptRun(len(texts), seconds[submit_json], seconds[submit_upload], peak, warm)
    say(
        f"f run {index + 1}: {run.items} items as JSON {run.json_rate:.0f} items/s "
        f"({run.json_seconds:.2f} s), as a CSV upload {run.upload_rate:.0f} items/s "
        f"({run.upload_seconds:.2f} s); web peak RSS {peak:.0f} MiB ({warm:.0f} warmed up)"
    )
    return run


def submit_json(client: ApiClient, texts: list[str]) -> float:
    """Seconds from sending the JSON body to its 201 (the body built before)."""
    body = batch_json(texts)
    started = time.monotonic()
    client.submit_batch(body)
    return time.monotonic() - started


def submit_upload(client: ApiClient, texts: list[str]) -> float:
    """Seconds from sending the multipart CSV upload to its 201 (the body built before)."""
    body, content_type = batch_upload(texts)
    started = time.monotonic()
    client.submit_batch(body, content_type)
    return time.monotonic() - started


def web_peak_rss_mb(web: Web) -> float:
    """The highest peak RSS among gunicorn's master and its workers: the one that served."""
    return max(peak_rss_mb(pid) for pid in (web.child.pid, *children_of(web.child.pid)))


def rows(options: Options, runs: list[AcceptRun]) -> list[Row]:
    if not runs:
        return []
    what = f"{options.accept_items} items, request to 201"
    found = [
        Row(
            f"f. batch accept, {label}, {what}",
            f"{median([rate(r) for r in runs]):.0f} items/s",
            f"{median([options.accept_items / rate(r) for r in runs]):.2f} s",
            runs=", ".join(f"{rate(r):.0f}" for r in runs),
        )
        for label, rate in (
            ("JSON body", lambda r: r.json_rate),
            ("CSV upload", lambda r: r.upload_rate),
        )
    ]
    found.append(
        Row(
            "f. web peak RSS during f",
            f"{median([r.web_peak_rss_mb for r in runs]):.0f} MiB",
            f"warmed up: {median([r.web_warm_rss_mb for r in runs]):.0f} MiB",
            runs=", ".join(f"{r.web_peak_rss_mb:.0f}" for r in runs),
        )
    )
    return found


def headline(options: Options, runs: list[AcceptRun]) -> dict[str, Any]:
    def figure(values: list[float], digits: int = 1) -> float | None:
        return round(median(values), digits) if runs else None

    return {
        "batch_accept_items_per_s": figure([r.json_rate for r in runs]),
        "batch_upload_items_per_s": figure([r.upload_rate for r in runs]),
        "web_peak_rss_mb_batch_accept": figure([r.web_peak_rss_mb for r in runs]),
    }


SCENARIO = Scenario(
    key="f",
    letters=("f",),
    run=run,
    rows=rows,
    headline=headline,
    run_json=lambda r: run_json(r, json_rate=r.json_rate, upload_rate=r.upload_rate),
)
