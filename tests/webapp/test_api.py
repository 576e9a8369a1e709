"""The JSON API's contract, through Django's test client on the real database (no worker)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from django.utils import timezone

from jobs.models import ApiToken, Job, Outcome, ProviderCall, UserLimits
from jobs.tokens import api_token_revoke
from jobs.usage import Usage
from tests.helpers import record_call
from tests.kinds import UNKNOWN_KIND, every_kind, example_input, stored_input

pytestmark = pytest.mark.django_db

SUMMARIZE = {
    "kind": "summarize",
    "input": {"text": "Some text to summarize. It has two sentences."},
}


@pytest.fixture
def call(client, token):
    def call(method: str, path: str, body=None, raw: bytes | None = None, **headers):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
        extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
        content_type = extra.pop("HTTP_CONTENT_TYPE", "application/json")
        return client.generic(
            method, f"/api/v1{path}", data or b"", content_type=content_type, **extra
        )

    return call


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_submit_stores_a_queued_job_and_answers_201_with_location(call, user):
    response = call("POST", "/jobs", SUMMARIZE)

    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == f"/api/v1/jobs/{body['id']}"
    assert body["status"] == "queued"
    assert body["model"] == "claude-haiku-4-5"
    assert body["input"]["max_words"] == 120, "defaults are filled in"
    assert body["usage"]["cost_usd"] == "0.000000"
    assert Job.objects.get(pk=body["id"]).owner == user


def test_the_message_is_sent_only_after_commit(call, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        call("POST", "/jobs", SUMMARIZE)
    assert len(callbacks) == 1


@every_kind
def test_each_kind_is_created_with_its_input_and_default_model(call, settings, kind):
    response = call("POST", "/jobs", {"kind": kind, "input": example_input(kind)})

    assert response.status_code == 201, response.content
    job = response.json()
    assert job["kind"] == kind
    assert job["input"] == stored_input(kind, example_input(kind))
    assert job["model"] == settings.AIJOBS_MODELS[kind]
    assert Job.objects.get().input == job["input"]


def test_a_kind_registered_at_run_time_is_accepted(call, throwaway_kind):
    response = call("POST", "/jobs", {"kind": "headline", "input": example_input("headline")})

    assert response.status_code == 201, response.content
    assert call("GET", "/jobs?kind=headline").json()["items"][0]["kind"] == "headline"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"kind": UNKNOWN_KIND, "input": {"text": "x"}}, ["kind"]),
        ({"kind": "summarize", "input": {}}, ["input", "text"]),
        ({"kind": "summarize", "input": {"text": "x", "max_words": 5}}, ["input", "max_words"]),
        ({"kind": "classify", "input": {"text": "x", "labels": ["a"]}}, ["input", "labels"]),
        ({"kind": "summarize", "input": {"text": "x"}, "status": "succeeded"}, ["status"]),
        ({"kind": "summarize", "input": {"text": "x"}, "model": "gpt-9"}, ["model"]),
        ({"kind": "summarize", "input": {"text": "a\u0000b"}}, ["input"]),
        ({"kind": "summarize", "input": "just a string"}, ["input"]),
        (
            {"kind": "extract", "input": {"text": "x", "schema": {"type": "string"}}},
            ["input", "schema"],
        ),
    ],
)
def test_bad_input_is_422_with_field_details_and_nothing_stored(call, body, loc):
    response = call("POST", "/jobs", body)

    assert response.status_code == 422, response.content
    details = response.json()["error"]["details"]
    assert any(detail["loc"][: len(loc)] == loc for detail in details), details
    assert Job.objects.count() == 0


def test_text_over_the_limit_is_refused(call, settings):
    settings.AIJOBS_MAX_INPUT_CHARS = 100
    response = call("POST", "/jobs", {"kind": "summarize", "input": {"text": "x" * 101}})

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["input", "text"]
    assert Job.objects.count() == 0


def test_body_over_the_limit_is_413(call, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = call("POST", "/jobs", {"kind": "summarize", "input": {"text": "x" * 5000}})

    assert response.status_code == 413
    assert error_code(response) == "request_too_large"
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"kind": "summarize", "input": {"text": "\xff\xfe"}}', "application/json", 400),
        (json.dumps(SUMMARIZE).encode(), "text/plain", 415),
    ],
)
def test_unparseable_bodies_are_4xx(call, raw, content_type, status):
    response = call("POST", "/jobs", raw=raw, content_type=content_type)

    assert response.status_code == status, response.content
    assert "error" in response.json()
    assert Job.objects.count() == 0


def test_requests_without_a_valid_token_are_401(client, user, token):
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", HTTP_AUTHORIZATION="Bearer aij_wrong").status_code == 401
    api_token_revoke(token=ApiToken.objects.get(user=user))
    response = client.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert error_code(response) == "unauthenticated"


def test_session_auth_works_for_a_logged_in_user(client, user):
    client.force_login(user)
    assert client.get("/api/v1/jobs").status_code == 200


def test_another_users_job_is_indistinguishable_from_a_missing_one(call, client, other_token):
    job_id = call("POST", "/jobs", SUMMARIZE).json()["id"]
    as_other = {"HTTP_AUTHORIZATION": f"Bearer {other_token}"}

    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/calls"):
        theirs = client.get(path, **as_other)
        missing = client.get(path.replace(job_id, str(uuid4())), **as_other)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", **as_other).status_code == 404
    assert client.get("/api/v1/jobs", **as_other).json()["items"] == []
    assert Job.objects.get(pk=job_id).status == "queued"


def job_routes() -> list[tuple[str, str]]:
    from webapp.api import api

    paths = api.get_openapi_schema()["paths"]
    return [(method, path) for path, item in paths.items() if "{job_id}" in path for method in item]


@pytest.mark.parametrize(("method", "path"), job_routes())
@pytest.mark.parametrize("job_id", ["not-a-uuid", "12345", f"{uuid4()}0"])
def test_a_malformed_job_id_is_a_missing_job(call, method, path, job_id):
    missing = call(method.upper(), path.removeprefix("/api/v1").replace("{job_id}", str(uuid4())))
    malformed = call(method.upper(), path.removeprefix("/api/v1").replace("{job_id}", job_id))

    assert malformed.status_code == missing.status_code == 404
    assert malformed.json() == missing.json()
    assert error_code(malformed) == "not_found"


def test_replayed_key_returns_the_same_job(call):
    first = call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "order-42"})
    again = call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "order-42"})

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Job.objects.count() == 1


def test_same_key_with_another_body_is_422(call):
    call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "order-42"})
    other = {"kind": "summarize", "input": {"text": "A different text."}}
    response = call("POST", "/jobs", other, **{"Idempotency-Key": "order-42"})

    assert response.status_code == 422
    assert error_code(response) == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_keys_are_per_user(call, client, other_token):
    mine = call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "k1"}).json()["id"]
    theirs = client.post(
        "/api/v1/jobs",
        json.dumps(SUMMARIZE),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {other_token}",
        HTTP_IDEMPOTENCY_KEY="k1",
    )
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine


def test_a_key_older_than_the_window_makes_a_new_job(call):
    first = call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "old"}).json()["id"]
    Job.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(hours=25))

    second = call("POST", "/jobs", SUMMARIZE, **{"Idempotency-Key": "old"})

    assert second.status_code == 201
    assert second.json()["id"] != first
    assert not second.has_header("Idempotent-Replayed")


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_malformed_idempotency_keys_are_400(client, token, key):
    response = client.post(
        "/api/v1/jobs",
        json.dumps(SUMMARIZE),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_list_is_newest_first_filtered_and_paginated(call):
    ids = [call("POST", "/jobs", SUMMARIZE).json()["id"] for _ in range(5)]
    call("POST", "/jobs", {"kind": "classify", "input": {"text": "x", "labels": ["a", "b"]}})

    first = call("GET", "/jobs?kind=summarize&limit=2").json()
    second = call("GET", f"/jobs?kind=summarize&limit=2&cursor={first['next_cursor']}").json()
    third = call("GET", f"/jobs?kind=summarize&limit=2&cursor={second['next_cursor']}").json()

    listed = [job["id"] for page in (first, second, third) for job in page["items"]]
    assert listed == list(reversed(ids))
    assert third["next_cursor"] is None
    assert call("GET", "/jobs?status=succeeded").json()["items"] == []


@pytest.mark.parametrize(
    "query",
    [
        "cursor=nonsense",
        "limit=0",
        "limit=1000",
        "status=exploded",
        "kind=no%20such%20kind",
        "kind=a%00b",
    ],
)
def test_bad_list_queries_are_422(call, query):
    assert call("GET", f"/jobs?{query}").status_code == 422


def test_cancel_a_queued_job_then_409(call):
    job_id = call("POST", "/jobs", SUMMARIZE).json()["id"]

    canceled = call("POST", f"/jobs/{job_id}/cancel")
    again = call("POST", f"/jobs/{job_id}/cancel")

    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["finished_at"] is not None
    assert again.status_code == 409
    assert error_code(again) == "job_finished"


def test_prefer_wait_on_a_finished_job_answers_at_once(call):
    job_id = call("POST", "/jobs", SUMMARIZE).json()["id"]
    call("POST", f"/jobs/{job_id}/cancel")

    response = call("GET", f"/jobs/{job_id}", Prefer="wait=30")

    assert response.status_code == 200
    assert response["Preference-Applied"] == "wait=30"
    assert response.json()["status"] == "canceled"


def record(job: Job, attempt: int, usage: Usage, outcome: Outcome = Outcome.OK) -> None:
    record_call(job, attempt=attempt, usage=usage, outcome=outcome)


def test_usage_totals_group_by_kind_and_model(call):
    summarize = Job.objects.get(pk=call("POST", "/jobs", SUMMARIZE).json()["id"])
    classify = Job.objects.get(
        pk=call(
            "POST", "/jobs", {"kind": "classify", "input": {"text": "x", "labels": ["a", "b"]}}
        ).json()["id"]
    )
    record(summarize, 1, Usage(input_tokens=1000, output_tokens=100), Outcome.INVALID_OUTPUT)
    record(summarize, 2, Usage(input_tokens=1000, output_tokens=100, cache_read_input_tokens=500))
    record(classify, 1, Usage(input_tokens=2_000_000))

    by_kind = call("GET", "/usage?group_by=kind").json()
    today = timezone.now().date().isoformat()
    by_day = call("GET", f"/usage?group_by=day&from={today}&to={today}").json()

    assert by_kind["totals"]["calls"] == 3
    assert by_kind["totals"]["input_tokens"] == 2_002_000
    # haiku: $1/M input, $5/M output, $0.10/M cache reads.
    assert Decimal(by_kind["totals"]["cost_usd"]) == Decimal("2.003050")
    assert {g["key"]: g["calls"] for g in by_kind["groups"]} == {"classify": 1, "summarize": 2}
    assert [g["key"] for g in by_day["groups"]] == [today]
    assert call("GET", "/usage?group_by=model").json()["groups"][0]["key"] == "claude-haiku-4-5"
    assert call("GET", "/usage?group_by=week").status_code == 422


def test_calls_are_listed_per_attempt(call):
    job = Job.objects.get(pk=call("POST", "/jobs", SUMMARIZE).json()["id"])
    record(job, 1, Usage(input_tokens=10, output_tokens=5), Outcome.RETRYABLE_ERROR)
    record(job, 2, Usage(input_tokens=10, output_tokens=5))

    calls = call("GET", f"/jobs/{job.id}/calls").json()

    assert [(c["attempt"], c["outcome"]) for c in calls] == [(1, "retryable_error"), (2, "ok")]
    assert ProviderCall.objects.filter(job=job).count() == 2
    assert call("GET", f"/jobs/{job.id}").json()["usage"]["input_tokens"] == 20


def test_health_needs_no_token(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200, response.json()
    assert response.json()["database"] is True


def test_openapi_schema_and_docs_need_a_user(client, token):
    browser = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}
    assert client.get("/api/v1/docs", **browser)["Location"].startswith("/login/")
    assert client.get("/api/v1/openapi.json", **browser)["Location"].startswith("/login/")
    for program in ({}, {"HTTP_ACCEPT": "application/json"}):
        response = client.get("/api/v1/openapi.json", **program)
        assert response.status_code == 401
        assert error_code(response) == "unauthenticated"
        assert response["WWW-Authenticate"] == "Bearer"
    as_user = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    schema = client.get("/api/v1/openapi.json", **as_user).json()
    assert "/api/v1/jobs" in schema["paths"]
    assert client.get("/api/v1/docs", **as_user).status_code == 200


def test_submitting_too_fast_is_429_with_retry_after(call, user):
    UserLimits.objects.create(user=user, submissions_per_minute=2)
    answers = [call("POST", "/jobs", SUMMARIZE) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [201, 201, 429]
    assert int(answers[2]["Retry-After"]) >= 1
    assert error_code(answers[2]) == "rate_limited"
    assert Job.objects.count() == 2


def test_a_spent_budget_refuses_new_jobs_with_402(call, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.01"))
    job = Job.objects.get(pk=call("POST", "/jobs", SUMMARIZE).json()["id"])
    record(job, 1, Usage(input_tokens=20_000))

    refused = call("POST", "/jobs", SUMMARIZE)

    assert refused.status_code == 402
    assert error_code(refused) == "budget_exceeded"
    assert Job.objects.count() == 1


def test_a_revoked_token_stops_working_at_once_in_the_revoking_process(call, user):
    assert call("GET", "/jobs").status_code == 200  # now cached

    api_token_revoke(token=ApiToken.objects.get(user=user))

    assert call("GET", "/jobs").status_code == 401


CLASSIFY_ON_SONNET = {
    "kind": "classify",
    "input": {"text": "The parcel never arrived.", "labels": ["complaint", "praise"]},
    "model": "claude-sonnet-4-5",
}


def finished(call, status: str, body=CLASSIFY_ON_SONNET) -> dict:
    """A job of `body` ended in `status` (the ORM stands in for the worker)."""
    job = call("POST", "/jobs", body).json()
    Job.objects.filter(pk=job["id"]).update(status=status, finished_at=timezone.now())
    return job


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_rerun_of_a_finished_job_is_a_new_job_with_the_same_request(
    call, status, django_capture_on_commit_callbacks
):
    original = finished(call, status)

    with django_capture_on_commit_callbacks() as callbacks:
        response = call("POST", f"/jobs/{original['id']}/rerun")

    assert response.status_code == 201, response.content
    rerun = response.json()
    assert response["Location"] == f"/api/v1/jobs/{rerun['id']}"
    assert rerun["id"] != original["id"]
    assert rerun["rerun_of"] == original["id"]
    assert original["rerun_of"] is None
    assert (rerun["kind"], rerun["input"], rerun["model"]) == (
        original["kind"],
        original["input"],
        original["model"],
    )
    assert (rerun["status"], rerun["attempts"], rerun["result"]) == ("queued", 0, None)
    assert len(callbacks) == 1, "the rerun is sent to the workers like any submission"
    assert call("GET", f"/jobs/{rerun['id']}").json()["rerun_of"] == original["id"]
    assert Job.objects.get(pk=original["id"]).status == status, "the original is left as it was"


@pytest.mark.parametrize("status", ["queued", "running", "retrying"])
def test_an_unfinished_job_cannot_be_rerun(call, status):
    original = call("POST", "/jobs", SUMMARIZE).json()
    Job.objects.filter(pk=original["id"]).update(status=status)

    response = call("POST", f"/jobs/{original['id']}/rerun")

    assert response.status_code == 409
    assert error_code(response) == "job_not_finished"
    assert Job.objects.count() == 1


def test_another_users_job_cannot_be_rerun(call, client, other_token):
    original = finished(call, "succeeded")
    as_other = {"HTTP_AUTHORIZATION": f"Bearer {other_token}"}

    theirs = client.post(f"/api/v1/jobs/{original['id']}/rerun", **as_other)
    missing = client.post(f"/api/v1/jobs/{uuid4()}/rerun", **as_other)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert Job.objects.count() == 1


def test_a_rerun_meets_the_budget_like_a_submission(call, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.01"))
    original = finished(call, "failed", SUMMARIZE)
    record(Job.objects.get(pk=original["id"]), 1, Usage(input_tokens=20_000))

    refused = call("POST", f"/jobs/{original['id']}/rerun")

    assert refused.status_code == 402
    assert error_code(refused) == "budget_exceeded"
    assert Job.objects.count() == 1


def test_a_rerun_meets_the_submission_rate_like_a_submission(call, user):
    UserLimits.objects.create(user=user, submissions_per_minute=2)
    original = finished(call, "failed", SUMMARIZE)

    answers = [call("POST", f"/jobs/{original['id']}/rerun") for _ in range(2)]

    assert [answer.status_code for answer in answers] == [201, 429]
    assert Job.objects.count() == 2


def test_a_rerun_is_validated_again(call, settings):
    original = finished(call, "failed", SUMMARIZE)
    settings.AIJOBS_MAX_INPUT_CHARS = 10

    refused = call("POST", f"/jobs/{original['id']}/rerun")

    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["loc"] == ["input", "text"]
    assert Job.objects.count() == 1
