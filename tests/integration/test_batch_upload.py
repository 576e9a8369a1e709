"""A batch end to end over real HTTP: a CSV uploaded, run by a real worker against the simulator,
its results downloaded as CSV and JSONL in submission order."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
import uuid

import pytest

from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LABELS = ["shipping", "billing", "other"]
ITEMS = 30


def multipart(fields: dict[str, str], file_name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, as a browser or curl -F sends it."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def download(api, path: str) -> tuple[str, str]:
    request = urllib.request.Request(f"{api.base_url}/api/v1{path}")
    request.add_header("Authorization", f"Bearer {api.token}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


def test_an_uploaded_csv_runs_and_its_results_download_in_order(api, worker):
    rows = [f"t{n},Ticket {n}: my parcel is late ({uuid.uuid4().hex[:6]})." for n in range(ITEMS)]
    data = ("id,text\r\n" + "\r\n".join(rows) + "\r\n").encode()
    fields = {"kind": "classify", "id_column": "id", "params": json.dumps({"labels": LABELS})}
    body, content_type = multipart(fields, "tickets.csv", data)

    created = api.request("POST", "/batches", raw=body, headers={"Content-Type": content_type})

    assert created.status == 201, created.body
    batch_id = created.body["id"]

    def finished_batch() -> dict | None:
        batch = api.request("GET", f"/batches/{batch_id}").body
        return batch if batch["status"] == "finished" else None

    finished = wait_for(finished_batch, timeout=90, what="the batch to finish")
    assert finished["counts"]["succeeded"] == ITEMS
    assert finished["usage"]["input_tokens"] > 0

    csv_type, csv_text = download(api, f"/batches/{batch_id}/results?format=csv")
    jsonl_type, jsonl_text = download(api, f"/batches/{batch_id}/results?format=jsonl")

    assert (csv_type, jsonl_type) == ("text/csv; charset=utf-8", "application/x-ndjson")
    table = list(csv.DictReader(io.StringIO(csv_text)))
    assert [line["custom_id"] for line in table] == [f"t{n}" for n in range(ITEMS)]
    assert all(line["status"] == "succeeded" and line["labels"] in LABELS for line in table)
    assert all(sum(int(line[f"label:{name}"]) for name in LABELS) == 1 for line in table)
    lines = [json.loads(line) for line in jsonl_text.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"t{n}" for n in range(ITEMS)]
    assert [line["result"]["labels"][0] for line in lines] == [line["labels"] for line in table]
