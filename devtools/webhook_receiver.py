"""A webhook receiver for the demo and the tests: it verifies, keeps and lists what arrives.

    python -m devtools.webhook_receiver --port 8025 --secret-file .data/demo/webhook-secret

Each POST is verified with the `standardwebhooks` package (the secret file is read again on
every request, so a rotated secret written there is used at once) and answered 204, or 401
when the signature does not verify. GET / lists what arrived (newest first) as HTML,
GET /received.json as JSON. The tests make it misbehave on purpose: --status answers every
POST with that code (with --location for a 3xx), --hang never answers, --answer-bytes sends
a body that large. SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import html
import json
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

# The one line printed at start; url_from_banner reads it.
BANNER = "webhook_receiver listening on "
DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1024 * 1024
ANSWER_CHUNK_BYTES = 64 * 1024
PAGE_STYLE = "body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"


@dataclass(frozen=True)
class Received:
    """One POST as it arrived, and whether its signature verified."""

    at: str
    webhook_id: str
    timestamp: str
    type: str
    subject: str
    verified: bool
    status: int
    body: str


@dataclass(frozen=True)
class Behaviour:
    """How the receiver answers POSTs: normally 204/401; the tests' misbehaviours."""

    status: int | None = None
    location: str | None = None
    hang: bool = False
    answer_bytes: int = 0


class Receiver:
    """What arrived, in memory, shared by the server's threads."""

    def __init__(self, secret: str | None, secret_file: Path | None, behaviour: Behaviour) -> None:
        self.secret = secret
        self.secret_file = secret_file
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._received: list[Received] = []

    def current_secret(self) -> str:
        if self.secret_file is not None:
            return self.secret_file.read_text().strip()
        return self.secret or ""

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            Webhook(self.current_secret()).verify(body, headers, json_parse=False)
        # An empty or missing secret file (the demo writes it as it starts) verifies nothing.
        except (WebhookVerificationError, EmptyWebhookSecretError, ValueError, OSError):
            return False
        return True

    def keep(self, item: Received) -> None:
        with self._lock:
            self._received.append(item)

    def received(self) -> list[Received]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._received))


def subject_of(body: bytes) -> tuple[str, str]:
    """The event type and the id of the job or batch it is about ("" when not JSON)."""
    try:
        payload = json.loads(body)
        return str(payload.get("type", "")), str(payload.get("data", {}).get("id", ""))
    except (ValueError, AttributeError):
        return "", ""


class Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the list at GET / is the log."""

    def do_GET(self) -> None:
        received = self.server.receiver.received()
        if self.path == "/received.json":
            self._answer(200, "application/json", json.dumps([asdict(r) for r in received]))
        elif self.path == "/":
            self._answer(200, "text/html; charset=utf-8", page(received))
        else:
            self._answer(404, "text/plain", "not found")

    def do_POST(self) -> None:
        length = min(int(self.headers.get("content-length") or 0), MAX_BODY_BYTES)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        behaviour = receiver.behaviour
        headers = {name.lower(): value for name, value in self.headers.items()}
        verified = receiver.verify(body, headers)
        status = behaviour.status or (204 if verified else 401)
        kind, subject = subject_of(body)
        receiver.keep(
            Received(
                at=datetime.now(UTC).isoformat(),
                webhook_id=headers.get("webhook-id", ""),
                timestamp=headers.get("webhook-timestamp", ""),
                type=kind,
                subject=subject,
                verified=verified,
                status=0 if behaviour.hang else status,
                body=body.decode(errors="replace"),
            )
        )
        if behaviour.hang:
            self._hang()
        elif behaviour.answer_bytes:
            self._answer_huge(status, behaviour.answer_bytes)
        else:
            extra = {"Location": behaviour.location} if behaviour.location else {}
            self._answer(status, "text/plain", "", extra)

    def _hang(self) -> None:
        # Never answer; end when the receiver stops (the client's deadline ends it sooner).
        self.server.receiver.stopping.wait()
        self.close_connection = True

    def _answer_huge(self, status: int, size: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * ANSWER_CHUNK_BYTES
        try:
            for start in range(0, size, ANSWER_CHUNK_BYTES):
                self.wfile.write(chunk[: size - start])
        except OSError:
            self.close_connection = True  # the client read what it wanted and hung up

    def _answer(
        self, status: int, content_type: str, text: str, extra: dict[str, str] | None = None
    ) -> None:
        data = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if status != 204:
            self.wfile.write(data)


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung answer must not keep the process alive at stop

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        super().__init__(address, Handler)
        self.receiver = receiver


def page(received: list[Received]) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(value))}</td>"
            for value in (r.at, r.webhook_id, r.type, r.subject, "yes" if r.verified else "no")
        )
        + "</tr>"
        for r in received
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Webhooks received</title>"
        f"<meta http-equiv='refresh' content='2'><style>{PAGE_STYLE}</style></head><body>"
        f"<h1>Webhooks received ({len(received)})</h1><table><tr><th>time</th>"
        "<th>webhook-id</th><th>type</th><th>subject</th><th>verified</th></tr>"
        f"{rows}</table></body></html>"
    )


def url_from_banner(line: str) -> str:
    """The URL from the receiver's first line of output; ValueError if it is not that line."""
    if not line.startswith(BANNER):
        raise ValueError(f"the webhook receiver did not start: {line!r}")
    return line[len(BANNER) :].strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.webhook_receiver", description="Receive and verify webhooks."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", help="the signing secret (whsec_...)")
    secret.add_argument("--secret-file", type=Path, help="a file holding it, read per request")
    parser.add_argument("--status", type=int, default=None, help="answer every POST with this")
    parser.add_argument("--location", default=None, help="Location header (with a 3xx --status)")
    parser.add_argument("--hang", action="store_true", help="never answer a POST")
    parser.add_argument("--answer-bytes", type=int, default=0, help="answer with a body this big")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    behaviour = Behaviour(args.status, args.location, args.hang, args.answer_bytes)
    receiver = Receiver(args.secret, args.secret_file, behaviour)
    server = ReceiverServer((args.host, args.port), receiver)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it runs off the main thread.
        if not receiver.stopping.is_set():
            receiver.stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"{BANNER}http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
