"""Submitting, canceling and rerunning batches: all or nothing, on the real database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from jobs import dispatch, limits, selectors
from jobs.batch_files import BatchFileError, BatchItem
from jobs.batches import (
    batch_cancel,
    batch_estimate_usd,
    batch_rerun,
    batch_submit,
    batch_validate,
)
from jobs.errors import (
    BatchAlreadyFinished,
    BudgetExceeded,
    IdempotencyKeyReused,
    InvalidInput,
)
from jobs.models import Batch, BatchStatus, Job, Status, UserLimits
from tests.kinds import every_kind, example_input, stored_input

pytestmark = pytest.mark.django_db

LABELS = {"labels": ["shipping", "billing", "other"]}


def texts(*values: str, custom_ids: tuple[str | None, ...] = ()) -> list[BatchItem]:
    ids = custom_ids or (None,) * len(values)
    return [
        BatchItem(number=n, custom_id=cid, input={"text": text})
        for n, (text, cid) in enumerate(zip(values, ids, strict=True), start=1)
    ]


def submit(user, items, kind: str = "classify", params=None, **options):
    return batch_submit(
        owner=user,
        kind=kind,
        model=options.pop("model", None),
        mode=options.pop("mode", "standard"),
        params=LABELS if params is None else params,
        items=items,
        **options,
    )


def refusal(user, items, **options) -> InvalidInput:
    with pytest.raises(InvalidInput) as error:
        submit(user, items, **options)
    assert_nothing_stored()
    return error.value


def assert_nothing_stored() -> None:
    assert (Batch.objects.count(), Job.objects.count()) == (0, 0)


def test_a_batch_is_stored_with_its_items_as_queued_unpublished_jobs(user, settings):
    items = texts("Parcel late.", "Charged twice.", custom_ids=("t-1", None))
    items.append(BatchItem(number=3, custom_id="t-3", input={"text": "Hm.", "multi_label": True}))

    batch = submit(user, items).batch

    assert (batch.kind, batch.model, batch.status, batch.total) == (
        "classify",
        settings.AIJOBS_MODELS["classify"],
        BatchStatus.QUEUED,
        3,
    )
    jobs = list(batch.jobs.order_by("position"))
    assert [(job.position, job.custom_id) for job in jobs] == [(1, "t-1"), (2, "2"), (3, "t-3")]
    assert all(job.status == Status.QUEUED and job.enqueued_at is None for job in jobs)
    assert jobs[0].input == stored_input("classify", {"text": "Parcel late.", **LABELS})
    assert jobs[2].input["multi_label"] is True, "an item may override a shared parameter"
    assert {job.owner_id for job in jobs} == {user.pk}


@every_kind
def test_each_kind_takes_its_examples_as_a_batch(user, kind):
    example = example_input(kind)
    params = {name: value for name, value in example.items() if name != "text"}

    batch = submit(user, texts(example["text"], "Another text."), kind=kind, params=params).batch

    assert batch.jobs.count() == 2
    assert batch.jobs.get(position=1).input == stored_input(kind, example)


def test_one_invalid_item_refuses_the_batch_naming_the_item_and_its_custom_id(user):
    items = texts("Fine.", "   ", "Fine too.", custom_ids=("a", "b", "c"))

    error = refusal(user, items)

    assert error.details == [
        {"item": 2, "custom_id": "b", "loc": ["input", "text"], "msg": error.details[0]["msg"]}
    ]
    assert "empty" in error.details[0]["msg"]


def test_only_the_first_hundred_problems_are_listed(user):
    error = refusal(user, texts(*[""] * 250))

    assert len(error.details) == 100
    assert [problem["item"] for problem in error.details] == list(range(1, 101))


def test_duplicate_and_malformed_custom_ids_are_problems(user):
    error = refusal(user, texts("One.", "Two.", "Three.", custom_ids=("x", "bad id!", "x")))

    assert [(p["item"], p["custom_id"], p["loc"]) for p in error.details] == [
        (2, "bad id!", ["custom_id"]),
        (3, "x", ["custom_id"]),
    ]
    assert "item 1 has this custom_id too" in error.details[1]["msg"]


def test_text_over_the_input_limit_is_a_problem_of_its_item(user, settings):
    settings.AIJOBS_MAX_INPUT_CHARS = 100
    error = refusal(user, texts("Short.", "x" * 101))

    assert (error.details[0]["item"], error.details[0]["loc"]) == (2, ["input", "text"])


@pytest.mark.parametrize(
    ("options", "loc"),
    [
        ({"kind": "no such kind"}, ["kind"]),
        ({"model": "gpt-4"}, ["model"]),
        ({"mode": "economy"}, ["mode"]),
        ({"params": {"text": "shared?", **LABELS}}, ["params", "text"]),
    ],
)
def test_a_bad_batch_setting_is_refused_before_any_item(user, options, loc):
    error = refusal(user, texts("Fine."), **options)

    assert error.details[0]["loc"] == loc


def test_economy_mode_says_it_is_not_available_yet(user):
    error = refusal(user, texts("Fine."), mode="economy")

    assert "not available yet" in error.message


def test_an_empty_batch_and_one_over_the_item_limit_are_refused(user, settings):
    settings.AIJOBS_BATCH_MAX_ITEMS = 3
    with pytest.raises(BatchFileError) as empty:
        submit(user, [])
    with pytest.raises(BatchFileError) as too_many:
        submit(user, texts("a", "b", "c", "d"))

    assert (empty.value.code, too_many.value.code, too_many.value.status) == (
        "empty_file",
        "too_many_items",
        413,
    )
    assert_nothing_stored()
    assert submit(user, texts("a", "b", "c")).batch.total == 3


def test_the_estimate_is_what_each_items_first_call_reserves(user):
    valid = batch_validate(
        kind="classify", model=None, mode="standard", params=LABELS, items=texts("One.", "Two.")
    )

    each = [
        limits.reservation_usd(
            model=valid.model, input_tokens=item.input_tokens, max_tokens=valid.max_tokens
        )
        for item in valid.items
    ]
    assert batch_estimate_usd(valid) == sum(each) > 0
    assert valid.items[0].input_tokens > len("One.") // 3, "the prompt and system count too"


def test_a_batch_costing_more_than_the_budget_left_is_refused_with_nothing_stored(user):
    valid = batch_validate(
        kind="classify", model=None, mode="standard", params=LABELS, items=texts(*["Hi."] * 40)
    )
    estimate = batch_estimate_usd(valid)
    UserLimits.objects.create(
        user=user, budget_usd=(estimate * Decimal("0.9")).quantize(Decimal("0.01"))
    )

    with pytest.raises(BudgetExceeded) as error:
        submit(user, texts(*["Hi."] * 40))

    assert "this batch may cost" in error.value.message
    assert_nothing_stored()
    assert submit(user, texts(*["Hi."] * 30)).batch.total == 30, "a smaller batch fits"


def test_the_same_key_and_body_replay_the_batch_and_another_body_is_refused(user):
    first = submit(user, texts("One.", "Two."), idempotency_key="k1")

    again = submit(user, texts("One.", "Two."), idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReused):
        submit(user, texts("One.", "Three."), idempotency_key="k1")

    assert (again.replayed, again.batch.pk) == (True, first.batch.pk)
    assert (Batch.objects.count(), Job.objects.count()) == (1, 2)


def test_ten_thousand_items_are_stored_in_a_handful_of_statements(
    user, django_assert_max_num_queries
):
    items = texts(*[f"Ticket number {n}." for n in range(10_000)])

    with django_assert_max_num_queries(30):
        batch = submit(user, items).batch

    assert batch.jobs.count() == 10_000
    assert batch.jobs.get(position=10_000).custom_id == "10000"


def finish(batch: Batch, statuses: dict[int, str]) -> None:
    for position, status in statuses.items():
        batch.jobs.filter(position=position).update(status=status, finished_at=timezone.now())


def test_cancel_ends_the_unfinished_items_and_then_the_batch_is_finished(user):
    batch = submit(user, texts("One.", "Two.", "Three.")).batch
    finish(batch, {1: Status.SUCCEEDED})

    canceled = batch_cancel(batch=batch)

    assert (canceled.status, canceled.finished_at is not None) == (BatchStatus.CANCELED, True)
    assert list(batch.jobs.order_by("position").values_list("status", flat=True)) == [
        Status.SUCCEEDED,
        Status.CANCELED,
        Status.CANCELED,
    ]
    with pytest.raises(BatchAlreadyFinished):
        batch_cancel(batch=batch)


def test_a_rerun_is_a_new_batch_of_the_failed_items_with_their_custom_ids(user):
    batch = submit(user, texts("One.", "Two.", "Three.", custom_ids=("a", "b", "c"))).batch
    finish(batch, {1: Status.FAILED, 2: Status.SUCCEEDED, 3: Status.FAILED})

    rerun = batch_rerun(owner=user, batch=batch)

    assert (rerun.rerun_of_id, rerun.total, rerun.params) == (batch.pk, 2, batch.params)
    jobs = list(rerun.jobs.order_by("position"))
    assert [(job.custom_id, job.position, job.status) for job in jobs] == [
        ("a", 1, Status.QUEUED),
        ("c", 2, Status.QUEUED),
    ]
    assert jobs[1].input == batch.jobs.get(custom_id="c").input


def test_a_rerun_without_items_in_that_status_is_refused(user):
    batch = submit(user, texts("One.")).batch

    with pytest.raises(InvalidInput):
        batch_rerun(owner=user, batch=batch, status="failed")
    with pytest.raises(InvalidInput):
        batch_rerun(owner=user, batch=batch, status="running")
    assert Batch.objects.count() == 1


def test_progress_is_counted_from_the_covering_index_alone(user):
    batch = submit(user, texts("One.", "Two.", "Three.")).batch
    finish(batch, {1: Status.SUCCEEDED})
    Job.objects.filter(batch=batch, position=1).update(input_tokens=7, cost_usd="0.000010")

    with connection.cursor() as cursor:
        # A table this small would be read whole; the question is whether the index suffices.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        progress = selectors.batch_progress(batch=batch)
        plan = selectors.batch_progress_query(batch=batch).explain()

    assert "Index Only Scan using job_batch_status" in plan
    assert (progress.counts["succeeded"], progress.counts["queued"], progress.finished) == (1, 2, 1)
    assert (progress.usage["input_tokens"], progress.usage["cost_usd"]) == (7, Decimal("0.00001"))


def test_the_dispatcher_is_kicked_once_the_batch_is_committed(
    user, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[str] = []
    monkeypatch.setattr(dispatch.celery_app, "send_task", lambda name, **_: sent.append(name))

    with django_capture_on_commit_callbacks() as callbacks:
        submit(user, texts("One.", "Two."))
        assert sent == [], "nothing is sent before the commit"
    for callback in callbacks:
        callback()

    assert sent == [dispatch.DISPATCH_TASK]
