"""A job's whole path through a real worker, broker, database and the simulator over HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobs import kinds
from jobs.kinds import extract
from jobs.models import Job, ProviderCall
from jobs.submission import job_enqueue
from jobs.usage import TOKEN_COUNTS
from tests.helpers import unique
from tests.integration.harness import wait_for
from tests.kinds import every_kind, example_input

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STORY = (
    "The harbour town voted to rebuild its old lighthouse. Volunteers raised the money in a year. "
    "The lamp was lit again on a stormy night in October, and fishing boats came home safely."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "town_kind": {"type": "string", "description": "what kind of town"},
        "month": {"type": "string"},
        "volunteers": {"type": "boolean"},
    },
    "required": ["town_kind", "month"],
}


def sim_total(simulator) -> int:
    return simulator.stats()["total"]


def assert_usage_matches_calls(job: dict, calls: list[dict]) -> None:
    """The job's totals are the sum of its recorded calls, each counted once."""
    for field in TOKEN_COUNTS:
        assert job["usage"][field] == sum(call[field] for call in calls)
    assert Decimal(job["usage"]["cost_usd"]) == sum(Decimal(call["cost_usd"]) for call in calls)


@every_kind
def test_each_kind_succeeds_with_usage_recorded(kind, api, worker, simulator):
    before = sim_total(simulator)
    created = api.submit(kind, example_input(kind, text=unique(STORY)))
    assert created.status == 201
    assert created.headers["location"] == f"/api/v1/jobs/{created.body['id']}"

    job = api.wait(created.body["id"])

    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    assert job["usage"]["input_tokens"] > 0
    assert job["usage"]["output_tokens"] > 0
    assert Decimal(job["usage"]["cost_usd"]) > 0
    calls = api.calls(job["id"])
    assert [(c["attempt"], c["seq"], c["outcome"]) for c in calls] == [(1, 0, "ok")]
    assert calls[0]["provider_request_id"].startswith("req_")
    assert_usage_matches_calls(job, calls)
    assert sim_total(simulator) - before == 1


@every_kind
def test_results_satisfy_the_jobs_own_output_model_in_its_order(kind, api, worker):
    module = kinds.get_kind(kind)
    job_input = example_input(kind, text=unique(example_input(kind)["text"]))

    job = api.wait(api.submit(kind, job_input).body["id"])

    assert job["status"] == "succeeded", job["error"]
    output_model = module.output_model(module.Input.model_validate(job_input))
    assert module.result_from(output_model.model_validate(job["result"])) == job["result"]
    assert list(job["result"]) == list(output_model.model_fields)


def test_extracted_data_keeps_the_order_of_the_jobs_schema(api, worker):
    invoice = next(example for example in extract.EXAMPLES if example.name == "Invoice")
    schema = invoice.input["schema"]
    job_input = {**invoice.input, "text": unique(invoice.input["text"])}

    job = api.wait(api.submit("extract", job_input).body["id"])

    assert job["status"] == "succeeded", job["error"]
    assert list(job["input"]["schema"]) == list(schema)
    assert list(job["input"]["schema"]["properties"]) == list(schema["properties"])
    assert list(job["result"]["data"]) == list(schema["properties"])
    item_order = list(schema["properties"]["line_items"]["items"]["properties"])
    assert [list(item) for item in job["result"]["data"]["line_items"]] == [item_order] * 2


def test_a_classify_job_gets_the_label_its_text_is_about(api, worker):
    job_input = {"text": unique(STORY), "labels": ["lighthouse news", "sports", "finance"]}

    result = api.wait(api.submit("classify", job_input).body["id"])["result"]

    assert result["labels"] == ["lighthouse news"]


def test_rate_limited_twice_succeeds_on_the_third_attempt(api, worker, simulator):
    before = sim_total(simulator)
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:429*2]]")}).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 3
    calls = api.calls(job_id)
    assert [(c["attempt"], c["outcome"], c["http_status"]) for c in calls] == [
        (1, "retryable_error", 429),
        (2, "retryable_error", 429),
        (3, "ok", 200),
    ]
    assert calls[0]["error"]["code"] == "rate_limited"
    assert_usage_matches_calls(job, calls)
    assert sim_total(simulator) - before == 3


def test_a_retrying_job_shows_its_state_and_last_error(api, worker):
    # 529 three times: the job spends a while waiting between attempts.
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:529*3]]")}).body["id"]

    def retrying() -> dict | None:
        job = api.request("GET", f"/jobs/{job_id}").body
        return job if job["status"] == "retrying" else None

    seen = wait_for(retrying, timeout=30, what="the job to show retrying")
    assert seen["next_retry_at"] is not None
    assert seen["error"]["code"] == "overloaded"
    assert api.wait(job_id)["status"] == "succeeded"


def test_bad_request_fails_after_one_call(api, worker, simulator):
    before = sim_total(simulator)
    job_id = api.submit(
        "classify", {"text": unique("text [[sim:400]]"), "labels": ["a", "b"]}
    ).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "bad_request"
    assert job["attempts"] == 1
    assert [c["outcome"] for c in api.calls(job_id)] == ["permanent_error"]
    assert sim_total(simulator) - before == 1


def test_retryable_errors_give_up_after_max_attempts(api, worker, settings):
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:500*10]]")}).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_error"
    assert job["attempts"] == settings.AIJOBS_MAX_ATTEMPTS
    assert len(api.calls(job_id)) == settings.AIJOBS_MAX_ATTEMPTS


def test_invalid_output_is_repaired_in_a_second_call(api, worker, simulator):
    before = sim_total(simulator)
    job_id = api.submit(
        "extract", {"text": unique(f"{STORY} [[sim:invalid*1]]"), "schema": SCHEMA}
    ).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    calls = api.calls(job_id)
    assert [(c["attempt"], c["seq"], c["outcome"]) for c in calls] == [
        (1, 0, "invalid_output"),
        (1, 1, "ok"),
    ]
    assert calls[0]["input_tokens"] > 0, "the invalid answer was paid for and must be recorded"
    assert_usage_matches_calls(job, calls)
    assert sim_total(simulator) - before == 2


def test_output_still_invalid_after_repair_fails_the_job(api, worker):
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:invalid*2]]")}).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_output"
    assert [c["outcome"] for c in api.calls(job_id)] == ["invalid_output", "invalid_output"]


def test_timeout_is_retried(api, worker, simulator):
    before = sim_total(simulator)
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:timeout*1]]")}).body["id"]

    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    calls = api.calls(job_id)
    assert [(c["outcome"], (c["error"] or {}).get("code")) for c in calls] == [
        ("retryable_error", "timeout"),
        ("ok", None),
    ]
    # No answer, so nothing is known of the timed-out call's usage: it records none.
    timed_out = calls[0]
    assert [timed_out[field] for field in TOKEN_COUNTS] == [0, 0, 0, 0]
    assert Decimal(timed_out["cost_usd"]) == 0
    assert calls[1]["input_tokens"] > 0
    assert_usage_matches_calls(job, calls)
    assert sim_total(simulator) - before == 2


def test_a_message_delivered_twice_runs_the_job_once(api, worker, simulator):
    before = sim_total(simulator)
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:latency=800]]")}).body["id"]
    job_enqueue(job_id=job_id)
    job_enqueue(job_id=job_id)

    job = api.wait(job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert len(api.calls(job_id)) == 1
    assert sim_total(simulator) - before == 1


def test_cancel_while_running_discards_the_late_result(api, worker):
    job_id = api.submit("summarize", {"text": unique(f"{STORY} [[sim:latency=1500]]")}).body["id"]
    wait_for(
        lambda: Job.objects.get(pk=job_id).status == "running", timeout=30, what="the job to run"
    )

    canceled = api.request("POST", f"/jobs/{job_id}/cancel")
    assert canceled.status == 200
    assert canceled.body["status"] == "canceled"

    wait_for(
        lambda: ProviderCall.objects.filter(job_id=job_id).exclude(outcome="pending").exists(),
        timeout=30,
        what="the paid call to be recorded",
    )
    job = api.request("GET", f"/jobs/{job_id}").body
    assert job["status"] == "canceled"
    assert job["result"] is None
    assert job["usage"]["input_tokens"] > 0, "the call was paid for, so it is counted"
    assert api.request("POST", f"/jobs/{job_id}/cancel").status == 409
