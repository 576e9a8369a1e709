"""`webhook` and `webhook_events_filter` on POST /jobs and POST /batches (JSON and multipart):
checked before anything is stored, shown in the job and batch JSON and in the schema."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Batch, Job, WebhookMessage

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:8025/hook"
BOTH = ["start", "completed"]
JOB = {"kind": "summarize", "input": {"text": "Some text. Two sentences."}}
BATCH = {"kind": "summarize", "items": [{"input": {"text": "One."}}, {"input": {"text": "Two."}}]}


@pytest.fixture
def post(client, token):
    def post(path: str, body=None, *, upload=None):
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if upload is not None:
            return client.post(f"/api/v1{path}", upload, **auth)
        return client.post(
            f"/api/v1{path}", json.dumps(body), content_type="application/json", **auth
        )

    return post


def test_a_job_keeps_its_webhook_and_filter_and_shows_them(post, client, token):
    answer = post("/jobs", {**JOB, "webhook": HOOK, "webhook_events_filter": ["start"]})
    assert answer.status_code == 201
    body = answer.json()
    assert (body["webhook"], body["webhook_events_filter"]) == (HOOK, ["start"])
    got = client.get(f"/api/v1/jobs/{body['id']}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert got == body


def test_a_job_without_a_webhook_shows_null_and_the_default_filter(post):
    body = post("/jobs", JOB).json()
    assert (body["webhook"], body["webhook_events_filter"]) == (None, ["completed"])


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"webhook": "https://127.0.0.2/hook"}, ["webhook"]),
        ({"webhook": "http://127.0.0.2/"}, ["webhook"]),
        ({"webhook": HOOK, "webhook_events_filter": []}, ["webhook_events_filter"]),
        ({"webhook": HOOK, "webhook_events_filter": ["finished"]}, ["webhook_events_filter"]),
    ],
)
def test_a_refused_webhook_is_422_and_stores_nothing(post, fields, loc):
    for path, body in (("/jobs", JOB), ("/batches", BATCH)):
        answer = post(path, {**body, **fields})
        assert answer.status_code == 422, answer.json()
        assert loc in [detail["loc"][:1] for detail in answer.json()["error"]["details"]]
    assert not Job.objects.exists()
    assert not Batch.objects.exists()
    assert not WebhookMessage.objects.exists()


def test_a_batch_has_the_webhook_and_its_items_none(post):
    answer = post("/batches", {**BATCH, "webhook": HOOK, "webhook_events_filter": BOTH})
    assert answer.status_code == 201
    body = answer.json()
    assert (body["webhook"], body["webhook_events_filter"]) == (HOOK, BOTH)
    assert set(Job.objects.filter(batch_id=body["id"]).values_list("webhook", flat=True)) == {""}


def test_an_upload_takes_the_webhook_fields_as_form_fields(post):
    upload = {
        "file": SimpleUploadedFile("items.csv", b"text\nOne.\nTwo.\n", "text/csv"),
        "kind": "summarize",
        "webhook": HOOK,
        "webhook_events_filter": "completed, start",
    }
    body = post("/batches", upload=upload).json()
    assert (body["webhook"], body["webhook_events_filter"]) == (HOOK, BOTH)


def test_a_refused_upload_webhook_stores_nothing(post):
    upload = {
        "file": SimpleUploadedFile("items.csv", b"text\nOne.\n", "text/csv"),
        "kind": "summarize",
        "webhook": "https://127.0.0.2/",
    }
    answer = post("/batches", upload=upload)
    assert answer.status_code == 422
    assert not Batch.objects.exists()


def test_reruns_keep_the_webhook(post, client, token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    job = post("/jobs", {**JOB, "webhook": HOOK}).json()
    client.post(f"/api/v1/jobs/{job['id']}/cancel", **auth)
    again = client.post(f"/api/v1/jobs/{job['id']}/rerun", **auth).json()
    assert again["webhook"] == HOOK
    batch = post("/batches", {**BATCH, "webhook": HOOK, "webhook_events_filter": ["start"]}).json()
    client.post(f"/api/v1/batches/{batch['id']}/cancel", **auth)
    rerun = client.post(f"/api/v1/batches/{batch['id']}/rerun?status=canceled", **auth).json()
    assert (rerun["webhook"], rerun["webhook_events_filter"]) == (HOOK, ["start"])


def test_the_schema_names_the_webhook_fields():
    from webapp.api import api

    schema = api.get_openapi_schema()
    bodies = schema["paths"]["/api/v1/batches"]["post"]["requestBody"]["content"].values()
    components = schema["components"]["schemas"]
    for properties in [
        *(components[name]["properties"] for name in ("JobCreate", "JobOut", "BatchOut")),
        *(body["schema"]["properties"] for body in bodies),
    ]:
        assert {"webhook", "webhook_events_filter"} <= set(properties)
