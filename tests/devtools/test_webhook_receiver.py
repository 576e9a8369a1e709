"""devtools.webhook_receiver: it verifies with standardwebhooks, keeps and lists what arrived,
reads a rotated secret from its file at once, misbehaves when told, and stops on a signal."""

from __future__ import annotations

import base64
import json
import signal
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.integration.harness import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"first-secret-for-the-receiver-32").decode()
OTHER = "whsec_" + base64.b64encode(b"other-secret-for-the-receiver-32").decode()
BODY = json.dumps({"type": "job.completed", "data": {"id": "job-1"}})


def post(url: str, secret: str, msg_id: str = "msg_1") -> int:
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, BODY),
        "content-type": "application/json",
    }
    request = urllib.request.Request(url, data=BODY.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as answer:
        return answer.code


@pytest.fixture
def receiver():
    started = WebhookReceiver.start(SECRET)
    yield started
    started.stop()


def test_a_signed_post_is_verified_kept_and_listed(receiver):
    assert post(receiver.url, SECRET, "msg_a") == 204
    assert post(receiver.url, OTHER, "msg_b") == 401

    received = receiver.received()
    assert [(r["webhook_id"], r["verified"]) for r in received] == [
        ("msg_a", True),
        ("msg_b", False),
    ]
    assert received[0]["type"] == "job.completed"
    assert received[0]["subject"] == "job-1"
    with urllib.request.urlopen(f"{receiver.url}/", timeout=5) as page:
        html = page.read().decode()
    assert html.index("msg_b") < html.index("msg_a")  # newest first


def test_the_secret_file_is_read_on_each_request(tmp_path: Path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    receiver = WebhookReceiver.start(secret_file)
    try:
        assert post(receiver.url, SECRET) == 204
        secret_file.write_text(OTHER + "\n")
        assert post(receiver.url, SECRET) == 401
        assert post(receiver.url, OTHER) == 204
        secret_file.write_text("")  # as the demo's file is for a moment while it starts
        assert post(receiver.url, OTHER) == 401
    finally:
        receiver.stop()


def test_a_told_status_and_location_are_answered():
    receiver = WebhookReceiver.start(SECRET, "--status", "302", "--location", "http://127.0.0.1:9/")
    try:
        request = urllib.request.Request(receiver.url, data=b"{}", method="POST")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(request, timeout=5)
        assert answer.value.code == 302
        assert answer.value.headers["Location"] == "http://127.0.0.1:9/"
    finally:
        receiver.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_even_while_an_answer_hangs(sig):
    receiver = WebhookReceiver.start(SECRET, "--hang")
    request = urllib.request.Request(receiver.url, data=b"{}", method="POST")
    with pytest.raises(TimeoutError):
        urllib.request.urlopen(request, timeout=0.5)
    receiver.proc.send_signal(sig)
    receiver.proc.send_signal(sig)  # twice, as an impatient Ctrl-C does
    assert receiver.proc.wait(timeout=10) == 0
