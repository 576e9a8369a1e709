"""The runner's decisions, with Claude faked at its one seam: `workers.claude.call`."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from django.db import OperationalError
from django.utils import timezone

from jobs import attempts, submission
from jobs.events import job_events_read
from jobs.models import Job, Outcome, ProviderCall, Status, UserLimits
from jobs.submission import job_submit
from jobs.usage import Usage
from tests.helpers import batch_of
from workers import claude, ratelimit, runner

pytestmark = pytest.mark.django_db

# An extract call's worst case (its max_tokens of output) costs more than a cent.
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
VALID = {"summary": "A short summary of the text.", "key_points": ["One point."]}


@pytest.fixture
def job(user):
    return job_submit(owner=user, kind="summarize", input={"text": "Some text. More text."}).job


@pytest.fixture
def replies(monkeypatch):
    """Queue the answers (a dict to validate, or a ClaudeError) the fake Claude gives, in order."""
    queued: list[dict | claude.ClaudeError] = []
    seen: list[list[dict]] = []

    def fake_call(*, model, system, messages, output_model, max_tokens, on_text) -> claude.Reply:
        seen.append(list(messages))
        answer = queued.pop(0)
        if isinstance(answer, claude.ClaudeError):
            raise answer
        text = json.dumps(answer)
        for start in range(0, len(text), 8):
            if on_text is not None:
                on_text(text[start : start + 8])
        try:
            output, errors = output_model.model_validate(answer), ""
        except Exception as exc:
            output, errors = None, str(exc)
        return claude.Reply(
            output=output,
            validation_errors=errors,
            text=text,
            usage=Usage(input_tokens=100, output_tokens=20),
            request_id=f"req_{len(seen)}",
            stop_reason="end_turn",
            latency_ms=5,
        )

    monkeypatch.setattr(claude, "call", fake_call)
    return queued, seen


def test_a_valid_answer_succeeds_the_job(job, replies):
    queued, _ = replies
    queued.append(VALID)

    assert runner.run_job(job.id).retry_in is None

    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert job.result == VALID
    assert job.input_tokens == 100


def test_an_invalid_answer_gets_one_repair_round_with_the_errors(job, replies):
    queued, seen = replies
    queued.extend([{"summary": "no key points"}, VALID])

    runner.run_job(job.id)

    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    assert [call.outcome for call in job.calls.all()] == ["invalid_output", "ok"]
    repair = seen[1]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert "key_points" in repair[2]["content"]


def test_a_stream_broken_midway_records_its_reported_usage_and_retries(job, replies):
    queued, _ = replies
    reported = Usage(input_tokens=70, output_tokens=1, cache_read_input_tokens=30)
    queued.append(
        claude.ClaudeError(
            "overloaded",
            "broke off",
            retryable=True,
            status=529,
            request_id="req_9",
            usage=reported,
        )
    )

    assert runner.run_job(job.id).retry_in is not None

    job.refresh_from_db()
    assert job.status == Status.RETRYING
    assert (job.input_tokens, job.output_tokens, job.cache_read_input_tokens) == (70, 1, 30)
    call = job.calls.get()
    assert (call.outcome, call.error_code, call.provider_request_id) == (
        Outcome.RETRYABLE_ERROR, "overloaded", "req_9",
    )  # fmt: skip
    assert Usage.of(call) == reported
    assert call.cost_usd == reported.cost_usd(job.model) > 0


def test_a_job_canceled_while_claude_writes_keeps_its_partial_usage_and_stays_canceled(
    job, replies, monkeypatch
):
    reported = Usage(input_tokens=50, output_tokens=1)

    def canceled_midway(**kwargs):
        submission.job_cancel(job=Job.objects.get(pk=job.id))
        raise claude.ClaudeError(
            claude.CANCELED, "stream closed", retryable=False, status=200, usage=reported
        )

    monkeypatch.setattr(claude, "call", canceled_midway)

    assert runner.run_job(job.id).retry_in is None

    job.refresh_from_db()
    assert (job.status, job.result, job.error_code) == (Status.CANCELED, None, "")
    assert job.input_tokens == 50
    call = job.calls.get()
    assert (call.outcome, call.error_code) == (Outcome.PERMANENT_ERROR, claude.CANCELED)
    assert Usage.of(call) == reported


# Committed for real, as in a worker: each status is published when its statement commits.
@pytest.mark.django_db(transaction=True)
def test_the_output_is_published_as_it_is_written_between_running_and_done(job, replies):
    queued, _ = replies
    queued.append(VALID)

    runner.run_job(job.id)

    entries = asyncio.run(job_events_read(job.id, None, 0))
    named = [(event, data.get("status")) for _, event, data in entries]
    assert named[:2] == [("status", "queued"), ("status", "running")]
    assert named[-2:] == [("status", "succeeded"), ("done", "succeeded")]
    outputs = [data for _, event, data in entries if event == "output"]
    assert named[2:-2] == [("output", None)] * len(outputs)
    assert len(outputs) >= 2, "the first piece at once, the rest when the answer ended"
    assert "".join(data["text"] for data in outputs) == json.dumps(VALID)
    assert outputs[-1]["partial"] == VALID
    assert {(data["attempt"], data["seq"]) for data in outputs} == {(1, 0)}


def test_with_streaming_off_the_answer_is_awaited_whole_and_nothing_is_published(
    job, replies, settings
):
    queued, _ = replies
    queued.append(VALID)
    settings.AIJOBS_STREAM_OUTPUT = False

    runner.run_job(job.id)

    job.refresh_from_db()
    assert job.status == Status.SUCCEEDED
    events = asyncio.run(job_events_read(job.id, None, 0))
    assert [event for _, event, _ in events if event == "output"] == []


class NotedRounds:
    """Stands in for the worker's round thread: the batches whose items finished, in order."""

    def __init__(self) -> None:
        self.batch_ids: list[object] = []

    def item_finished(self, batch_id: object) -> None:
        self.batch_ids.append(batch_id)


@pytest.mark.django_db(transaction=True)
def test_a_batch_item_is_awaited_whole_publishes_no_output_and_gives_its_room(
    user, replies, monkeypatch
):
    queued, _ = replies
    queued.append(VALID)
    batch = batch_of(user, ["Some text. More text."])
    (item,) = batch.jobs.all()
    rounds = NotedRounds()
    monkeypatch.setattr(runner, "ROUNDS", rounds)

    runner.run_job(item.id)

    item.refresh_from_db()
    assert item.status == Status.SUCCEEDED
    entries = asyncio.run(job_events_read(item.id, None, 0))
    named = [(event, data.get("status")) for _, event, data in entries]
    assert named[-2:] == [("status", "succeeded"), ("done", "succeeded")]
    assert [event for event, _ in named if event == "output"] == []
    assert rounds.batch_ids == [batch.id]


@pytest.fixture
def sent_back(monkeypatch):
    """The messages the runner sends back for batch items, as (ids, countdown); sent as well."""
    sent: list[tuple[list[str], float | None]] = []
    send = submission.batch_items_enqueue

    def record(job_ids, *, countdown=None) -> bool:
        sent.append(([str(job_id) for job_id in job_ids], countdown))
        return send(job_ids, countdown=countdown)

    monkeypatch.setattr(submission, "batch_items_enqueue", record)
    return sent


def items_of(user, n: int) -> list[str]:
    batch = batch_of(user, [f"Item {i}. It says little." for i in range(n)])
    ids = batch.jobs.order_by("position").values_list("pk", flat=True)
    return [str(pk) for pk in ids]


def statuses(job_ids: list[str]) -> list[str]:
    by_id = dict(Job.objects.filter(pk__in=job_ids).values_list("pk", "status"))
    return [by_id[UUID(job_id)] for job_id in job_ids]


def test_a_message_of_items_runs_each_once_in_turn(user, replies, sent_back):
    queued, seen = replies
    queued.extend([VALID] * 3)
    item_ids = items_of(user, 3)

    runner.run_items(item_ids)

    assert statuses(item_ids) == [Status.SUCCEEDED] * 3
    texts = [Job.objects.get(pk=job_id).input["text"] for job_id in item_ids]
    assert len(seen) == 3
    assert all(text in messages[0]["content"] for text, messages in zip(texts, seen, strict=True))
    assert sent_back == []


def test_items_not_begun_in_time_go_back_a_message_each(user, replies, sent_back, monkeypatch):
    queued, _ = replies
    queued.append(VALID)
    item_ids = items_of(user, 3)
    monkeypatch.setattr(runner, "ITEMS_SECONDS", 0.0)

    runner.run_items(item_ids)

    assert statuses(item_ids) == [Status.SUCCEEDED, Status.QUEUED, Status.QUEUED]
    assert sent_back == [([item_ids[1]], None), ([item_ids[2]], None)]


def test_an_item_to_try_again_goes_back_alone_after_its_delay(user, replies, sent_back):
    queued, _ = replies
    queued.extend(
        [
            claude.ClaudeError("overloaded", "529", retryable=True, retry_after=1.0, status=529),
            VALID,
        ]
    )
    item_ids = items_of(user, 2)

    runner.run_items(item_ids)

    assert statuses(item_ids) == [Status.RETRYING, Status.SUCCEEDED]
    ((ids, countdown),) = sent_back
    assert ids == [item_ids[0]]
    assert countdown is not None
    assert countdown >= 1.0


def test_after_an_item_raised_the_rest_go_back_before_the_error(
    user, replies, sent_back, monkeypatch
):
    monkeypatch.setattr(runner, "_attempt", lambda job, task_id: 1 / 0)
    item_ids = items_of(user, 3)

    with pytest.raises(ZeroDivisionError):
        runner.run_items(item_ids)

    assert statuses(item_ids) == [Status.FAILED, Status.QUEUED, Status.QUEUED]
    assert sent_back == [([item_ids[1]], None), ([item_ids[2]], None)]


def test_a_retryable_error_schedules_a_retry(job, replies):
    queued, _ = replies
    queued.append(
        claude.ClaudeError("rate_limited", "429", retryable=True, retry_after=1.0, status=429)
    )

    outcome = runner.run_job(job.id)

    assert outcome.retry_in is not None
    assert outcome.retry_in >= 1.0
    job.refresh_from_db()
    assert job.status == Status.RETRYING
    assert job.error_code == "rate_limited"


def test_the_last_attempt_fails_instead_of_retrying(job, replies, settings):
    queued, _ = replies
    settings.AIJOBS_MAX_ATTEMPTS = 1
    queued.append(claude.ClaudeError("overloaded", "529", retryable=True, status=529))

    assert runner.run_job(job.id).retry_in is None

    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "gave up after 1 attempts" in job.error_message


def test_a_permanent_error_fails_at_once(job, replies):
    queued, _ = replies
    queued.append(claude.ClaudeError("bad_request", "400", retryable=False, status=400))

    assert runner.run_job(job.id).retry_in is None

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "bad_request")
    assert job.calls.get().outcome == "permanent_error"


def test_a_job_held_by_someone_else_is_skipped_without_calling(job, replies):
    Job.objects.filter(pk=job.id).update(status=Status.CANCELED)

    assert runner.run_job(job.id).retry_in is None
    assert job.calls.count() == 0


def test_a_worker_whose_call_the_reaper_settled_leaves_the_job_alone(job, replies, monkeypatch):
    queued, _ = replies
    queued.append(VALID)
    answer = claude.call

    def stalled_past_the_lease(**kwargs):
        ProviderCall.objects.filter(job=job).update(outcome=Outcome.UNKNOWN)
        return answer(**kwargs)

    monkeypatch.setattr(claude, "call", stalled_past_the_lease)

    assert runner.run_job(job.id).retry_in is None

    job.refresh_from_db()
    assert job.status == Status.RUNNING, "the next attempt finishes it, not this one"
    assert job.result is None
    assert job.input_tokens == 0


def test_the_owners_running_limit_defers_without_using_an_attempt(replies, user):
    UserLimits.objects.create(user=user, max_running=1)
    job, other = (
        job_submit(owner=user, kind="summarize", input={"text": "A text."}).job for _ in "ab"
    )
    attempts.job_claim(job_id=other.id)

    outcome = runner.run_job(job.id)

    assert outcome.retry_in is not None
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.QUEUED, 0)


def test_a_spent_budget_fails_the_job_before_calling(replies, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.01"))
    job = job_submit(owner=user, kind="extract", input={"text": "x", "schema": SCHEMA}).job

    runner.run_job(job.id)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "budget_exceeded")
    assert job.calls.count() == 0


def test_a_provider_429_pauses_the_model_for_every_worker(job, replies, user, settings):
    settings.AIJOBS_RETRY_MAX_DELAY = 60
    queued, _ = replies
    queued.append(
        claude.ClaudeError("rate_limited", "429", retryable=True, retry_after=30, status=429)
    )
    runner.run_job(job.id)
    other = job_submit(owner=user, kind="summarize", input={"text": "Another. Text."}).job

    outcome = runner.run_job(other.id)

    assert outcome.retry_in >= 25, "the second job waits out the pause without calling"
    other.refresh_from_db()
    assert (other.status, other.attempts, other.calls.count()) == (Status.QUEUED, 0, 0)


def test_waiting_for_the_rate_limit_comes_back_within_the_retry_cap(job, replies, settings):
    settings.AIJOBS_RETRY_MAX_DELAY = 2
    ratelimit.pause(job.model, 600)

    countdowns = [runner.run_job(job.id).retry_in for _ in range(20)]

    assert all(0 < countdown <= 2 for countdown in countdowns), countdowns
    assert len(set(countdowns)) > 1, "still jittered under the cap"
    job.refresh_from_db()
    assert (job.status, job.attempts, job.calls.count()) == (Status.QUEUED, 0, 0)


def test_waiting_for_the_running_limit_comes_back_within_the_retry_cap(replies, user, settings):
    settings.AIJOBS_RETRY_MAX_DELAY = 1
    UserLimits.objects.create(user=user, max_running=1)
    job, other = (
        job_submit(owner=user, kind="summarize", input={"text": "A text."}).job for _ in "ab"
    )
    attempts.job_claim(job_id=other.id)

    assert 0 < runner.run_job(job.id).retry_in <= 1


def test_a_job_that_keeps_killing_its_worker_fails_instead_of_looping(job, replies, settings):
    Job.objects.filter(pk=job.pk).update(lost_leases=settings.AIJOBS_MAX_LOST_LEASES)
    attempts.job_claim(job_id=job.id)
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    runner.run_job(job.id)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "worker_lost")
    assert job.calls.count() == 0


def test_a_database_outage_leaves_the_job_to_the_reaper(job, replies, monkeypatch):
    queued, _ = replies
    queued.append(VALID)

    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(attempts, "call_finish", database_gone)

    with pytest.raises(OperationalError):
        runner.run_job(job.id)

    job.refresh_from_db()
    assert job.status == Status.RUNNING, "not failed: the lease lapses and the reaper resends it"


def test_a_bug_fails_the_job_visibly(job, replies, monkeypatch):
    monkeypatch.setattr(runner, "_attempt", lambda job, task_id: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        runner.run_job(job.id)

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "internal_error")
