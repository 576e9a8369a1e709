"""Load for the benchmark: job bodies, a keep-alive API client, parallel calls, and HTTP load.

HTTP load comes from `wrk` when it is installed (`apt-get install -y wrk`), else from a
Python client with one thread per connection, which tops out far lower; every result says
which one made it.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from devtools.bench.stack import BenchError
from jobs import kinds

HTTP_TIMEOUT = 30.0
# One text for every job (its size drives the token counts), with each kind's example parameters.
TEXT = (
    "Order {ref} from ACME Corp was placed on 2026-03-02 for 3 units at 99.50 EUR each. "
    "The parcel left the warehouse two days later but never arrived, and the tracking page "
    "has shown no update since. The customer asks for a refund or a replacement. "
    "Support replied that a claim was opened with the carrier."
)
WRK_THREADS = 2


def job_body(index: int, tag: str, kind: ModuleType | None = None) -> dict[str, Any]:
    """Job `index` of a run: the built-in kinds in turn (or only `kind`), each with a text of
    its own."""
    kind = kind or kinds.BUILTIN[index % len(kinds.BUILTIN)]
    text = TEXT.format(ref=f"{tag}-{index}")
    return {"kind": kind.NAME, "input": {**kind.EXAMPLES[0].input, "text": text}}


# The kind of the bench's batches, with its example parameters shared by every item.
BATCH_KIND = kinds.BUILTIN[0]


def batch_texts(count: int, tag: str) -> list[str]:
    return [TEXT.format(ref=f"{tag}-{n}") for n in range(1, count + 1)]


def _batch_params() -> dict[str, Any]:
    return {k: v for k, v in BATCH_KIND.EXAMPLES[0].input.items() if k != "text"}


def batch_json(texts: list[str]) -> bytes:
    """A POST /batches JSON body: one item per text."""
    items = [{"input": {"text": text}} for text in texts]
    return json.dumps({"kind": BATCH_KIND.NAME, "params": _batch_params(), "items": items}).encode()


def batch_upload(texts: list[str]) -> tuple[bytes, str]:
    """The same batch as a multipart upload of a CSV file (a `text` column): body, Content-Type."""
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["text"])
    writer.writerows([text] for text in texts)
    boundary = uuid.uuid4().hex
    fields = {"kind": BATCH_KIND.NAME, "params": json.dumps(_batch_params())}
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="items.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{table.getvalue()}\r\n--{boundary}--\r\n"
    )
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


class ApiClient:
    """The JSON API over keep-alive HTTP/1.1, one connection per calling thread."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._local = threading.local()

    def submit(self, body: dict[str, Any]) -> str:
        """POST /jobs; the new job's id."""
        status, answer = self._request("POST", "/api/v1/jobs", json.dumps(body).encode())
        if status != 201:
            raise BenchError(f"POST /api/v1/jobs answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["id"])

    def submit_batch(self, body: bytes, content_type: str = "application/json") -> str:
        """POST /batches, a JSON body or a multipart upload; the new batch's id."""
        path = "/api/v1/batches"
        status, answer = self._request("POST", path, body, {"Content-Type": content_type})
        if status != 201:
            raise BenchError(f"POST /api/v1/batches answered {status}: {answer[:300]!r}")
        return str(json.loads(answer)["id"])

    def wait(self, job_id: str, seconds: int) -> int:
        """GET /jobs/{id} with `Prefer: wait=seconds`; the answer's status code."""
        path = f"/api/v1/jobs/{job_id}"
        return self._request("GET", path, None, {"Prefer": f"wait={seconds}"})[0]

    def _request(
        self, method: str, path: str, body: bytes | None, extra: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        headers = {**self.headers, **(extra or {})}
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            # The server closed an idle keep-alive connection: one fresh try.
            conn.close()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
            self._local.conn = conn
        return conn


def in_parallel(count: int, threads: int, action: Callable[[int], Any]) -> list[Any]:
    """action(0), ..., action(count - 1) from `threads` threads; results in order.

    The first error (or a Ctrl-C) cancels what has not started and is raised.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-load")
    try:
        results = list(pool.map(action, range(count)))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


# --- HTTP load ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """Requests per second and latency of a fixed-length load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    generator: str


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "python-threads"


def http_load(
    base_url: str,
    paths: list[str],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
) -> LoadResult:
    """GET the paths in turn over `connections` keep-alive connections for `seconds`."""
    if load_generator() == "wrk":
        return _wrk(base_url, paths, headers, connections=connections, seconds=seconds)
    return _python_load(base_url, paths, headers, connections=connections, seconds=seconds)


# A Lua script for wrk: rotate through the paths, print a machine-readable summary at the end.
WRK_SCRIPT = """
local paths = {%(paths)s}
local counter = 0
%(headers)s
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-RESULT %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for plain ASCII


def _wrk(
    base_url: str,
    paths: list[str],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
) -> LoadResult:
    script = WRK_SCRIPT % {
        "paths": ", ".join(_lua_string(path) for path in paths),
        "headers": "\n".join(
            f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
        ),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:g}s"]
        output = subprocess.run(
            [*command, "-s", file.name, base_url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        Path(file.name).unlink()
    return _parse_wrk(output)


def _parse_wrk(output: str) -> LoadResult:
    line = next((line for line in output.splitlines() if line.startswith("BENCH-RESULT")), None)
    if line is None:
        raise BenchError(f"wrk printed no summary:\n{output}")
    requests, duration_us, errors, p50_us, p99_us = (int(part) for part in line.split()[1:])
    return LoadResult(
        rps=requests / (duration_us / 1e6),
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        requests=requests,
        errors=errors,
        generator="wrk",
    )


def _python_load(
    base_url: str,
    paths: list[str],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
) -> LoadResult:
    parts = urlsplit(base_url)
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def loop(slot: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
        index = slot
        while time.monotonic() < deadline:
            started = time.monotonic()
            conn.request("GET", paths[index % len(paths)], headers=headers)
            response = conn.getresponse()
            response.read()
            latencies[slot].append(time.monotonic() - started)
            errors[slot] += response.status != 200
            index += connections
        conn.close()

    started = time.monotonic()
    in_parallel(connections, connections, loop)
    elapsed = time.monotonic() - started
    flat = sorted(value for slot in latencies for value in slot)
    return LoadResult(
        rps=len(flat) / elapsed,
        p50_ms=flat[len(flat) // 2] * 1000,
        p99_ms=flat[min(int(len(flat) * 0.99), len(flat) - 1)] * 1000,
        requests=len(flat),
        errors=sum(errors),
        generator="python-threads",
    )
