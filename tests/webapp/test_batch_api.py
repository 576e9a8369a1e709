"""The batch API's contract through Django's test client on the real database (no worker)."""

from __future__ import annotations

import csv
import io
import json
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.http import StreamingHttpResponse
from django.utils import timezone

from jobs import rows
from jobs.models import Batch, Job, Status, UserLimits
from tests.kinds import every_kind, example_input, example_output, stored_input

pytestmark = pytest.mark.django_db

LABELS = ["shipping", "billing", "other"]
CLASSIFY = {
    "kind": "classify",
    "params": {"labels": LABELS},
    "items": [
        {"custom_id": "t1", "input": {"text": "My parcel is late."}},
        {"custom_id": "t2", "input": {"text": "I was charged twice.", "multi_label": True}},
        {"input": {"text": "Where is my refund?"}},
    ],
}


@pytest.fixture
def post(client, token):
    """POST to /api/v1/batches: a JSON body, or a multipart upload when `upload` is given."""

    def post(body=None, *, upload=None, raw: bytes | None = None, **headers):
        extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
        extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
        if upload is not None:
            return client.post("/api/v1/batches", upload, **extra)
        data = raw if raw is not None else json.dumps(body)
        content_type = extra.pop("HTTP_CONTENT_TYPE", "application/json")
        return client.generic("POST", "/api/v1/batches", data, content_type=content_type, **extra)

    return post


@pytest.fixture
def get(client, token):
    def get(path: str):
        return client.get(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {token}")

    return get


@pytest.fixture
def post_to(client, token):
    """POST without a body, as cancel and rerun take it."""

    def post_to(path: str):
        return client.post(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {token}")

    return post_to


def upload(data: bytes, name: str = "tickets.csv", **fields):
    fields.setdefault("kind", "classify")
    fields.setdefault("params", json.dumps({"labels": LABELS}))
    return {"file": _named(data, name), **fields}


def _named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def assert_refused(response, status: int, code: str, words: str = "") -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert words in json.dumps(error)
    assert (Batch.objects.count(), Job.objects.count()) == (0, 0), "nothing is stored"
    return error


# --- submitting ---------------------------------------------------------------------


def test_a_json_batch_is_201_with_its_location_counts_and_queued_items(post, user, settings):
    response = post(CLASSIFY)

    assert response.status_code == 201, response.content
    batch = response.json()
    assert response["Location"] == f"/api/v1/batches/{batch['id']}"
    assert batch["results_url"] == f"/api/v1/batches/{batch['id']}/results"
    assert (batch["kind"], batch["mode"], batch["status"], batch["total"]) == (
        "classify",
        "standard",
        "queued",
        3,
    )
    assert batch["model"] == settings.AIJOBS_MODELS["classify"]
    assert batch["counts"] == {
        "queued": 3,
        "running": 0,
        "retrying": 0,
        "succeeded": 0,
        "failed": 0,
        "canceled": 0,
    }
    assert batch["usage"]["cost_usd"] == "0.000000"
    assert batch["finished_at"] is None
    assert batch["created_at"].endswith("Z")
    stored = Batch.objects.get(pk=batch["id"])
    assert stored.owner == user
    assert list(stored.jobs.order_by("position").values_list("custom_id", flat=True)) == [
        "t1",
        "t2",
        "3",
    ]


def test_the_items_are_jobs_listed_by_batch_with_their_custom_ids(post, get, call_job):
    batch_id = post(CLASSIFY).json()["id"]
    call_job()

    items = get(f"/jobs?batch={batch_id}&limit=10").json()["items"]
    alone = [job for job in get("/jobs").json()["items"] if job["batch_id"] is None]

    assert sorted(job["custom_id"] for job in items) == ["3", "t1", "t2"]
    assert {job["batch_id"] for job in items} == {batch_id}
    assert items[0]["input"]["labels"] == LABELS
    assert [(job["batch_id"], job["custom_id"]) for job in alone] == [(None, None)]


@pytest.fixture
def call_job(client, token):
    """Submit one job outside any batch."""

    def submit():
        body = {"kind": "summarize", "input": {"text": "A job on its own."}}
        return client.post(
            "/api/v1/jobs",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return submit


def test_a_csv_upload_takes_its_text_and_id_columns(post):
    data = b'ref,body,note\nA-1,My parcel is late.,x\nA-2,"Charged twice,\nplease refund",y\n'

    response = post(upload=upload(data, text_column="body", id_column="ref"))

    assert response.status_code == 201, response.content
    jobs = Job.objects.order_by("position")
    assert [(job.custom_id, job.input["text"]) for job in jobs] == [
        ("A-1", "My parcel is late."),
        ("A-2", "Charged twice,\nplease refund"),
    ]


def test_a_jsonl_upload_is_read_by_its_name(post):
    lines = [{"custom_id": "a", "input": {"text": "Late parcel."}}, {"text": "Double charge."}]
    data = "\n".join(json.dumps(line) for line in lines).encode()

    response = post(upload=upload(data, "tickets.jsonl"))

    assert response.status_code == 201, response.content
    assert list(Job.objects.order_by("position").values_list("custom_id", flat=True)) == ["a", "2"]


@every_kind
def test_each_kinds_example_file_is_accepted(post, kind, settings):
    path = settings.BASE_DIR / "docs" / "examples" / f"{kind}.csv"
    params = {name: value for name, value in example_input(kind).items() if name != "text"}

    response = post(
        upload=upload(path.read_bytes(), path.name, kind=kind, params=json.dumps(params))
    )

    assert response.status_code == 201, response.content
    assert response.json()["total"] >= 10
    first = Job.objects.get(position=1)
    assert first.input == stored_input(kind, {**params, "text": first.input["text"]})


def test_a_replayed_key_returns_the_same_batch_and_another_body_is_422(post):
    first = post(CLASSIFY, idempotency_key="batch-1")
    again = post(CLASSIFY, idempotency_key="batch-1")
    other = post({**CLASSIFY, "params": {"labels": ["a", "b"]}}, idempotency_key="batch-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert (Batch.objects.count(), Job.objects.count()) == (1, 3)


def test_a_key_whose_first_request_is_in_flight_is_409(post, user):
    held, release = threading.Event(), threading.Event()

    def hold_the_key() -> None:
        with transaction.atomic():
            rows.try_advisory_lock(f"idempotency:batch:{user.pk}:batch-2")
            held.set()
            release.wait(timeout=10)
        connection.close()

    holder = threading.Thread(target=hold_the_key)
    holder.start()
    try:
        assert held.wait(timeout=10)
        response = post(CLASSIFY, idempotency_key="batch-2")
    finally:
        release.set()
        holder.join(timeout=10)

    assert_refused(response, 409, "idempotency_key_in_flight")


# --- refused, with nothing stored ------------------------------------------------------


def test_one_invalid_item_is_422_listing_it_by_number_and_custom_id(post):
    items = [*CLASSIFY["items"], {"custom_id": "t4", "input": {"text": " "}}]

    error = assert_refused(post({**CLASSIFY, "items": items}), 422, "invalid_input")

    assert [(d["item"], d["custom_id"], d["loc"]) for d in error["details"]] == [
        (4, "t4", ["input", "text"])
    ]


def test_a_csv_problem_names_the_line_number(post):
    data = b'text\nFine.\n"  "\nFine too.\n'

    error = assert_refused(post(upload=upload(data)), 422, "invalid_input")

    assert [(d["item"], d["custom_id"]) for d in error["details"]] == [(3, "3")]


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        ("text\nCaf\xe9\n".encode("latin-1"), "not_utf8", "UTF-8"),
        (b"\nMy parcel is late.\n", "no_header", "header"),
        (b"body\nMy parcel is late.\n", "no_text_column", '\\"text\\"'),
        (b"text,ref\nLate.,1\nCharged twice.\n", "ragged_row", "line 3"),
        (b"", "empty_file", "empty"),
        (b"text\n", "empty_file", "no items"),
    ],
)
def test_a_bad_file_is_a_4xx_naming_the_problem(post, data, code, words):
    assert_refused(post(upload=upload(data)), 422, code, words)


def test_duplicate_custom_ids_are_422_naming_both_items(post):
    data = b"id,text\na,Late.\nb,Charged.\na,Refund?\n"

    error = assert_refused(post(upload=upload(data, id_column="id")), 422, "invalid_input")

    assert error["details"][0]["item"] == 4
    assert "item 2 has this custom_id too" in error["details"][0]["msg"]


def test_too_many_items_is_413(post, settings):
    settings.AIJOBS_BATCH_MAX_ITEMS = 2

    assert_refused(post(CLASSIFY), 413, "too_many_items", "AIJOBS_BATCH_MAX_ITEMS")
    assert_refused(post(upload=upload(b"text\na\nb\nc\n")), 413, "too_many_items")


def test_a_body_or_file_over_the_byte_limit_is_413(post, settings):
    settings.AIJOBS_BATCH_MAX_BYTES = 2048
    big = [{"input": {"text": "x" * 500}} for _ in range(5)]

    assert_refused(post({**CLASSIFY, "items": big}), 413, "too_large")
    assert_refused(post(upload=upload(b"text\n" + b"x" * 3000 + b"\n")), 413, "too_large")


def test_a_batch_far_over_the_byte_limit_is_refused_before_it_is_read(post, settings):
    settings.AIJOBS_BATCH_MAX_BYTES = 1024
    huge = b"text\n" + b"x" * (2 * 1024 * 1024) + b"\n"

    assert_refused(post(upload=upload(huge)), 413, "too_large")


def test_a_json_batch_larger_than_the_job_body_limit_is_accepted(post, settings):
    items = [{"input": {"text": f"Ticket {n}: " + "my parcel is late. " * 20}} for n in range(800)]
    body = {**CLASSIFY, "items": items}
    assert len(json.dumps(body)) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 4
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096

    response = post(body)

    assert response.status_code == 201, response.content
    assert Job.objects.count() == 800


def test_a_batch_over_the_budget_left_is_402(post, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.01"))

    assert_refused(post(CLASSIFY), 402, "budget_exceeded", "this batch may cost")


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"mode": "economy"}, ["mode"]),
        ({"kind": "no such kind"}, ["kind"]),
        ({"model": "gpt-4"}, ["model"]),
        ({"params": {"text": "shared", "labels": LABELS}}, ["params", "text"]),
    ],
)
def test_bad_batch_settings_are_422(post, change, loc):
    error = assert_refused(post({**CLASSIFY, **change}), 422, "invalid_input")

    assert error["details"][0]["loc"] == loc


def test_a_body_that_is_not_json_is_400(post):
    assert_refused(post(raw=b"{not json"), 400, "bad_request", "not JSON")
    assert_refused(post(raw="text\nCaf\xe9\n".encode("latin-1")), 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({**CLASSIFY, "status": "succeeded"}).encode(),
        json.dumps({**CLASSIFY, "items": [{"text": "no input object"}]}).encode(),
        json.dumps({**CLASSIFY, "items": "not a list"}).encode(),
    ],
)
def test_a_malformed_json_body_is_422(post, body):
    assert_refused(post(raw=body), 422, "invalid_request")


def test_an_upload_without_a_file_or_with_bad_params_is_422(post):
    no_file = {"kind": "classify", "params": json.dumps({"labels": LABELS})}

    assert_refused(post(upload=no_file), 422, "invalid_request", "file")
    assert_refused(post(upload=upload(b"text\nHi\n", params="{labels")), 422, "invalid_request")
    assert_refused(post(upload=upload(b"text\nHi\n", params="[1]")), 422, "invalid_request")


def test_other_content_types_are_415(post):
    assert_refused(post(raw=b"text\nHi\n", content_type="text/csv"), 415, "unsupported_media_type")


def test_a_job_asking_for_economy_mode_is_422(client, token):
    body = {"kind": "summarize", "input": {"text": "Some text."}, "mode": "economy"}
    response = client.post(
        "/api/v1/jobs",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert_refused(response, 422, "invalid_input", "not available yet")


# --- reading, canceling, rerunning ----------------------------------------------------------


def settle(batch_id: str, position: int, status: str, **fields) -> None:
    Job.objects.filter(batch_id=batch_id, position=position).update(
        status=status, finished_at=timezone.now(), **fields
    )


def test_counts_and_usage_follow_the_items(post, get):
    batch_id = post(CLASSIFY).json()["id"]
    settle(batch_id, 1, Status.SUCCEEDED, input_tokens=120, output_tokens=30, cost_usd="0.0002")
    settle(batch_id, 2, Status.FAILED, input_tokens=100, output_tokens=0, cost_usd="0.0001")

    batch = get(f"/batches/{batch_id}").json()

    assert (batch["counts"]["succeeded"], batch["counts"]["failed"], batch["counts"]["queued"]) == (
        1,
        1,
        1,
    )
    assert batch["usage"]["input_tokens"] == 220
    assert batch["usage"]["output_tokens"] == 30
    assert batch["usage"]["cost_usd"] == "0.000300"


def test_list_is_newest_first_filtered_and_paginated(post, get):
    ids = [post(CLASSIFY).json()["id"] for _ in range(3)]
    Batch.objects.filter(pk=ids[0]).update(status="canceled")

    first = get("/batches?limit=2").json()
    second = get(f"/batches?limit=2&cursor={first['next_cursor']}").json()

    assert [b["id"] for b in first["items"] + second["items"]] == list(reversed(ids))
    assert [b["id"] for b in get("/batches?status=canceled").json()["items"]] == [ids[0]]


def test_another_users_batch_is_404(post, client, other_token):
    batch_id = post(CLASSIFY).json()["id"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {other_token}"}

    assert client.get(f"/api/v1/batches/{batch_id}", **auth).status_code == 404
    assert client.post(f"/api/v1/batches/{batch_id}/cancel", **auth).status_code == 404
    assert client.get(f"/api/v1/batches/{batch_id}/results", **auth).status_code == 404
    assert client.get(f"/api/v1/jobs?batch={batch_id}", **auth).json()["items"] == []
    malformed = client.get("/api/v1/batches/not-a-uuid", **auth)
    assert malformed.status_code == 404
    assert malformed.json()["error"]["message"] == "no such batch"


def test_cancel_ends_the_unfinished_items_then_409(post, post_to):
    batch_id = post(CLASSIFY).json()["id"]
    settle(batch_id, 1, Status.SUCCEEDED)

    canceled = post_to(f"/batches/{batch_id}/cancel")
    again = post_to(f"/batches/{batch_id}/cancel")

    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["counts"]["canceled"] == 2
    assert (again.status_code, again.json()["error"]["code"]) == (409, "batch_finished")


def test_rerun_makes_a_batch_of_the_failed_items(post, post_to):
    batch_id = post(CLASSIFY).json()["id"]
    settle(batch_id, 2, Status.FAILED)

    response = post_to(f"/batches/{batch_id}/rerun")
    nothing = post_to(f"/batches/{batch_id}/rerun?status=canceled")

    assert response.status_code == 201, response.content
    rerun = response.json()
    assert (rerun["rerun_of"], rerun["total"], response["Location"]) == (
        batch_id,
        1,
        f"/api/v1/batches/{rerun['id']}",
    )
    assert list(Job.objects.filter(batch_id=rerun["id"]).values_list("custom_id", flat=True)) == [
        "t2"
    ]
    assert nothing.status_code == 422


def results(get, batch_id: str, file_format: str):
    response = get(f"/batches/{batch_id}/results?format={file_format}")
    assert response.status_code == 200, response.content
    assert isinstance(response, StreamingHttpResponse), "results are streamed"
    assert f'filename="batch-{batch_id}.{file_format}"' in response["Content-Disposition"]
    return response, b"".join(response.streaming_content).decode()


def test_results_stream_as_jsonl_in_submission_order(post, get):
    batch_id = post(CLASSIFY).json()["id"]
    result = {"rationale": "Late.", "labels": ["shipping"], "confidence": 0.9}
    settle(batch_id, 1, Status.SUCCEEDED, result=result, input_tokens=50, cost_usd="0.00005")
    settle(batch_id, 3, Status.FAILED, error_code="invalid_output", error_message="no JSON")

    response, text = results(get, batch_id, "jsonl")

    assert response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["t1", "t2", "3"]
    assert lines[0]["result"] == result
    assert (lines[0]["input_tokens"], lines[0]["cost_usd"]) == (50, "0.000050")
    assert (lines[2]["status"], lines[2]["error_code"], lines[2]["result"]) == (
        "failed",
        "invalid_output",
        None,
    )
    job_ids = list(Job.objects.order_by("position").values_list("id", flat=True))
    assert [line["job_id"] for line in lines] == [str(job_id) for job_id in job_ids]


def test_results_as_csv_spread_classify_labels_over_columns(post, get):
    batch_id = post(CLASSIFY).json()["id"]
    result = {"rationale": "Both.", "labels": ["shipping", "billing"], "confidence": 0.7}
    settle(batch_id, 2, Status.SUCCEEDED, result=result)

    response, text = results(get, batch_id, "csv")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    table = list(csv.DictReader(io.StringIO(text)))
    assert [line["custom_id"] for line in table] == ["t1", "t2", "3"]
    assert table[1]["labels"] == "shipping; billing"
    assert [table[1][f"label:{name}"] for name in LABELS] == ["1", "1", "0"]
    assert table[0]["label:shipping"] == ""
    assert table[0]["status"] == "queued"


def test_results_as_csv_spread_extract_fields_over_columns(post, get):
    params = {"schema": example_input("extract")["schema"]}
    body = {"kind": "extract", "params": params, "items": [{"input": {"text": "Maria, Northwind"}}]}
    batch_id = post(body).json()["id"]
    settle(batch_id, 1, Status.SUCCEEDED, result=example_output("extract"))

    _, text = results(get, batch_id, "csv")

    (line,) = csv.DictReader(io.StringIO(text))
    for name in params["schema"]["properties"]:
        assert line[f"data.{name}"] == str(example_output("extract")["data"].get(name, ""))
