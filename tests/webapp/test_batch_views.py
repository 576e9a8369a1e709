"""The batch pages, through Django's test client on the real database (no worker)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from jobs.models import Batch, BatchStatus, Job, Status, UserLimits
from tests.kinds import every_kind, example_input, example_output, stored_input
from tests.webapp.test_views import SCRIPT, form_data
from webapp.views.batches import PREVIEW_ROWS

pytestmark = pytest.mark.django_db

LABELS = ["shipping", "billing", "other"]
TICKETS = [
    ("t-1", "My parcel is two weeks late."),
    ("t-2", "I was charged twice this month."),
    ("t-3", "Do you ship to Norway?"),
]


@pytest.fixture
def web(client, user):
    client.force_login(user)
    return client


def csv_file(rows, header=("id", "body"), name="tickets.csv") -> SimpleUploadedFile:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return SimpleUploadedFile(name, buffer.getvalue().encode(), content_type="text/csv")


def batch_form(kind="classify", file=None, **changes) -> dict:
    """What the new-batch page posts: the kind's shared parameters as the job form fills them
    in from its first example (its text left out: the file brings the texts)."""
    values = form_data(kind, example_input(kind))
    values.pop("text")
    return {
        **values,
        "idempotency_key": str(uuid.uuid4()),
        "file": file or csv_file(TICKETS),
        "text_column": "body",
        "id_column": "id",
        **changes,
    }


def make_batch(owner, kind="classify", statuses=("queued",) * 3, **fields) -> Batch:
    """A batch and its items as batch_submit stores them, in the given states (made with the
    ORM, without a worker or dispatcher)."""
    now = timezone.now()
    batch = Batch.objects.create(
        owner=owner,
        kind=kind,
        model=settings.AIJOBS_MODELS[kind],
        params={key: value for key, value in example_input(kind).items() if key != "text"},
        total=len(statuses),
        **fields,
    )
    Job.objects.bulk_create(
        _item(batch, position, status, now) for position, status in enumerate(statuses, start=1)
    )
    return batch


def _item(batch: Batch, position: int, status: str, now) -> Job:
    finished = status in ("succeeded", "failed", "canceled")
    return Job(
        owner=batch.owner,
        kind=batch.kind,
        model=batch.model,
        input=stored_input(batch.kind, example_input(batch.kind, text=f"Item {position}.")),
        batch=batch,
        custom_id=f"item-{position}",
        position=position,
        status=status,
        result=example_output(batch.kind) if status == "succeeded" else None,
        error_code="invalid_output" if status == "failed" else "",
        error_message="no JSON" if status == "failed" else "",
        input_tokens=1000 if finished else 0,
        output_tokens=200 if finished else 0,
        cost_usd=Decimal("0.0020") if finished else Decimal(0),
        started_at=now - timedelta(seconds=10) if status != "queued" else None,
        finished_at=now if finished else None,
    )


def started(batch: Batch, seconds_ago: float) -> Batch:
    batch.status = BatchStatus.RUNNING
    batch.started_at = timezone.now() - timedelta(seconds=seconds_ago)
    batch.save(update_fields=["status", "started_at"])
    return batch


def assert_nothing_stored() -> None:
    assert (Batch.objects.count(), Job.objects.count()) == (0, 0)


# --- access and navigation ----------------------------------------------------------------------


def test_batch_pages_require_login(client, user):
    batch = make_batch(user)
    for path in ["/batches", "/batches/new", f"/batches/{batch.id}", f"/batches/{batch.id}/live"]:
        response = client.get(path)

        assert response.status_code == 302, path
        assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_another_users_batch_is_404_everywhere(web, other_user):
    batch = make_batch(other_user, statuses=("failed", "running"))

    for name in ("batch_detail", "batch_detail_live"):
        assert web.get(reverse(name, args=[batch.id])).status_code == 404
    for name in ("batch_cancel", "batch_rerun"):
        assert web.post(reverse(name, args=[batch.id])).status_code == 404
    for file_format in ("csv", "jsonl"):
        assert web.get(reverse("batch_results", args=[batch.id, file_format])).status_code == 404
    assert str(batch.id) not in web.get(reverse("batch_list")).content.decode()
    assert Batch.objects.get().status == BatchStatus.QUEUED


def test_the_nav_has_batches_current_on_every_batch_page(web, user):
    batch = make_batch(user)
    for path in ["/batches", "/batches/new", f"/batches/{batch.id}"]:
        html = web.get(path).content.decode()

        assert f'href="{reverse("batch_list")}" aria-current="page"' in html, path


def test_a_trailing_slash_opens_the_batch_pages(web):
    assert web.get("/batches/")["Location"] == reverse("batch_list")
    assert web.get("/batches/new/")["Location"] == reverse("batch_new")


# --- the form ------------------------------------------------------------------------------------


@every_kind
def test_the_form_has_each_kinds_shared_parameters_but_no_text(web, kind):
    html = web.get(reverse("batch_new"), {"kind": kind}).content.decode()

    assert 'enctype="multipart/form-data"' in html
    assert 'name="file"' in html
    assert 'name="text_column"' in html
    assert 'name="id_column"' in html
    assert 'name="text"' not in html
    for name in form_data(kind, example_input(kind)):
        if name != "text" and name != "kind":
            assert f'name="{name}"' in html, name
    assert f'value="{kind}" checked' in html
    assert 'name="idempotency_key"' in html


def test_submitting_a_csv_stores_the_batch_and_opens_its_page(web, user):
    response = web.post(reverse("batch_new"), batch_form())

    batch = Batch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("batch_detail", args=[batch.id])
    assert (batch.owner, batch.kind, batch.total, batch.status) == (user, "classify", 3, "queued")
    assert batch.params["labels"] == example_input("classify")["labels"]
    items = list(batch.jobs.order_by("position").values_list("custom_id", "input"))
    assert [(custom_id, item["text"]) for custom_id, item in items] == TICKETS
    assert items[0][1] == stored_input("classify", example_input("classify", text=TICKETS[0][1]))


def test_without_an_id_column_items_are_named_by_their_line(web):
    web.post(reverse("batch_new"), batch_form(id_column=""))

    assert list(Job.objects.order_by("position").values_list("custom_id", flat=True)) == [
        "2",
        "3",
        "4",
    ]


def test_a_jsonl_file_is_read_as_jsonl(web):
    lines = "".join(json.dumps({"ref": ref, "body": text}) + "\n" for ref, text in TICKETS)
    upload = SimpleUploadedFile("tickets.jsonl", lines.encode())

    web.post(reverse("batch_new"), batch_form(file=upload, id_column="ref"))

    assert list(Job.objects.order_by("position").values_list("custom_id", flat=True)) == [
        "t-1",
        "t-2",
        "t-3",
    ]


def test_a_double_post_of_one_form_makes_one_batch(web):
    key = str(uuid.uuid4())

    first = web.post(reverse("batch_new"), batch_form(idempotency_key=key))
    second = web.post(reverse("batch_new"), batch_form(idempotency_key=key))

    assert Batch.objects.count() == 1
    assert first["Location"] == second["Location"]


def test_a_used_form_sent_again_with_another_file_gets_a_new_key(web):
    key = str(uuid.uuid4())
    web.post(reverse("batch_new"), batch_form(idempotency_key=key))

    other = csv_file([("x-1", "Something else.")])
    response = web.post(reverse("batch_new"), batch_form(idempotency_key=key, file=other))

    html = response.content.decode()
    assert response.status_code == 200
    assert "already used to create a batch" in html
    assert f'value="{key}"' not in html
    assert Batch.objects.count() == 1


def test_invalid_items_are_listed_by_line_and_nothing_is_stored(web):
    rows = [("t-1", "Fine."), ("t-2", ""), ("t 3", "Bad id.")]

    response = web.post(reverse("batch_new"), batch_form(file=csv_file(rows)))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Some items are invalid, so nothing was stored" in html
    assert "Line 3" in html
    assert "(t-2)" in html
    assert "<strong>text</strong>" in html
    assert "Line 4" in html
    assert "<strong>custom_id</strong>" in html
    assert "Line 2" not in html
    assert_nothing_stored()


def test_a_bad_shared_parameter_is_said_once_next_to_its_field(web):
    response = web.post(reverse("batch_new"), batch_form(**{"classify-labels": "only one"}))

    html = response.content.decode()
    block = html.split('id="field-classify-labels"')[1].split('id="field-')[0]
    assert block.count("field-error") == 1
    assert "Invalid items" not in html
    assert_nothing_stored()


def test_a_file_without_the_text_column_is_said_next_to_the_file(web):
    response = web.post(reverse("batch_new"), batch_form(text_column="message"))

    block = response.content.decode().split('id="field-file"')[1].split('id="field-')[0]
    assert "no column" in block
    assert "message" in block
    assert_nothing_stored()


def test_a_file_that_is_not_utf8_is_refused(web):
    upload = SimpleUploadedFile("tickets.csv", "id,body\nt-1,Caf\xe9\n".encode("latin-1"))

    response = web.post(reverse("batch_new"), batch_form(file=upload))

    assert "UTF-8" in response.content.decode()
    assert_nothing_stored()


def test_a_batch_over_the_budget_is_refused_on_the_form(web, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal("0.01"))

    response = web.post(reverse("batch_new"), batch_form())

    assert response.status_code == 200
    assert "The budget of $0.01 per month has $0.01 left; this batch may cost" in (
        response.content.decode()
    )
    assert_nothing_stored()


def test_no_file_is_a_field_error(web):
    data = batch_form()
    del data["file"]

    response = web.post(reverse("batch_new"), data)

    assert "field-error" in response.content.decode().split('id="field-file"')[1]
    assert_nothing_stored()


# --- the preview ---------------------------------------------------------------------------------


def preview(web, file, file_size=None, **changes):
    data = batch_form(file=file, **changes)
    data.pop("idempotency_key")
    data["idempotency_key"] = str(uuid.uuid4())
    if file_size is not None:
        data["file_size"] = str(file_size)
    response = web.post(reverse("batch_preview"), data)
    assert response.status_code == 200
    return response.content.decode()


def test_the_preview_shows_the_first_rows_their_problems_and_the_cost(web):
    rows = [(f"t-{n}", f"Ticket number {n}.") for n in range(1, 16)]
    rows[2] = ("t-3", "")

    html = preview(web, csv_file(rows))

    assert 'id="batch-preview" data-live-part' in html
    assert html.count("<tr") == 1 + PREVIEW_ROWS
    assert "Ticket number 1." in html
    assert f"Ticket number {PREVIEW_ROWS + 1}." not in html
    assert html.count("field-error") == 1
    assert "Fix the problems below to see the estimated cost" in html
    assert_nothing_stored()


def test_the_preview_lists_problems_past_the_rows_it_shows(web):
    rows = [(f"t-{n}", f"Ticket number {n}.") for n in range(1, 16)]
    rows[13] = ("t-14", "")

    html = preview(web, csv_file(rows))

    assert "Further down" in html
    assert "Line 15" in html


def test_the_preview_estimates_the_whole_file(web):
    whole = preview(web, csv_file(TICKETS))
    upload = csv_file(TICKETS)
    scaled = preview(web, upload, file_size=upload.size * 10)

    assert "Estimated cost" in whole
    assert "about" not in whole.split("Estimated cost")[1][:80]
    assert "about 30" in scaled
    assert "scaled from the first 3 rows" in scaled
    assert _estimate(scaled) == pytest.approx(_estimate(whole) * 10, rel=Decimal("0.01"))
    assert_nothing_stored()


def _estimate(html: str) -> Decimal:
    shown = html.split("data-estimate>")[1].split("</strong>")[0].removeprefix("about ")
    return Decimal(shown.removeprefix("$").replace(",", ""))


def test_the_preview_says_why_a_file_cannot_be_read(web):
    html = preview(web, csv_file(TICKETS), text_column="message")

    assert "This file cannot be read" in html
    assert "message" in html


def test_the_preview_says_a_bad_shared_parameter(web):
    html = preview(web, csv_file(TICKETS), **{"classify-labels": "only one"})

    assert "<strong>Labels</strong>" in html


def test_the_preview_escapes_the_file(web):
    html = preview(web, csv_file([(SCRIPT.replace("<", "").replace(">", ""), SCRIPT)]))

    assert SCRIPT not in html
    assert "&lt;script&gt;" in html


# --- a batch's page ------------------------------------------------------------------------------


def test_the_batch_page_shows_progress_counts_cost_and_time_left(web, user):
    statuses = ("succeeded", "succeeded", "failed", "running", "queued", "queued")
    batch = started(make_batch(user, statuses=statuses), seconds_ago=30)

    html = web.get(reverse("batch_detail", args=[batch.id])).content.decode()

    assert '<progress class="progress-bar progress-bar-lg" max="6" value="3"' in html
    assert "3 of 6 finished" in html
    for state, number in {"succeeded": 2, "failed": 1, "running": 1, "queued": 2}.items():
        assert f'<li data-state="{state}">' in html
        assert (
            html.split(f'<li data-state="{state}">')[1]
            .split("</li>")[0]
            .endswith(f"<strong>{number}</strong>")
        )
    assert "$0.0060" in html
    # Three items in 30 s, three to go: about 30 s left.
    time_left = html.split("data-time-left>")[1].split("</dd>")[0]
    assert time_left.startswith("About ")
    assert time_left.endswith(" s")
    assert "Cancel batch" in html
    assert "Rerun 1 failed" in html
    assert reverse("batch_results", args=[batch.id, "csv"]) in html
    assert reverse("batch_results", args=[batch.id, "jsonl"]) in html
    assert 'data-live-active="true"' in html


def test_time_left_waits_for_the_first_finished_item(web, user):
    batch = started(make_batch(user, statuses=("running", "queued")), seconds_ago=5)

    html = web.get(reverse("batch_detail", args=[batch.id])).content.decode()

    assert "Estimated once the first items finish" in html


def test_a_finished_batch_page_stops_polling_and_offers_no_cancel(web, user):
    batch = make_batch(user, statuses=("succeeded", "succeeded"), status=BatchStatus.FINISHED)

    for name in ("batch_detail", "batch_detail_live"):
        html = web.get(reverse(name, args=[batch.id])).content.decode()

        assert 'data-live-active="false"' in html
        assert "Cancel batch" not in html
        assert "Rerun" not in html


def test_the_live_fragment_holds_the_changing_parts(web, user):
    batch = make_batch(user)

    html = web.get(reverse("batch_detail_live", args=[batch.id])).content.decode()

    for part in ("batch-head", "batch-progress", "batch-facts"):
        assert f'id="{part}" data-live-part' in html
    assert "<html" not in html


def test_cancel_cancels_the_unfinished_items(web, user):
    batch = started(make_batch(user, statuses=("succeeded", "running", "queued")), 5)

    response = web.post(reverse("batch_cancel", args=[batch.id]), follow=True)

    assert "Batch canceled" in response.content.decode()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELED
    statuses = list(batch.jobs.order_by("position").values_list("status", flat=True))
    assert statuses[0] == Status.SUCCEEDED
    assert statuses[2] == Status.CANCELED


def test_cancel_of_a_finished_batch_answers_409_and_says_why(web, user):
    batch = make_batch(user, statuses=("succeeded",), status=BatchStatus.FINISHED)

    response = web.post(reverse("batch_cancel", args=[batch.id]))

    assert response.status_code == 409
    assert "already finished" in response.content.decode()


def test_cancel_and_rerun_are_post_only(web, user):
    batch = make_batch(user)
    for name in ("batch_cancel", "batch_rerun", "batch_preview"):
        args = [] if name == "batch_preview" else [batch.id]
        assert web.get(reverse(name, args=args)).status_code == 405


def test_rerun_makes_a_batch_of_the_failed_items_and_opens_it(web, user):
    statuses = ("succeeded", "failed", "succeeded", "failed")
    batch = make_batch(user, statuses=statuses, status=BatchStatus.FINISHED)

    response = web.post(reverse("batch_rerun", args=[batch.id]))

    rerun = Batch.objects.get(rerun_of=batch)
    assert response["Location"] == reverse("batch_detail", args=[rerun.id])
    assert list(rerun.jobs.order_by("position").values_list("custom_id", flat=True)) == [
        "item-2",
        "item-4",
    ]
    html = web.get(response["Location"]).content.decode()
    assert "A new batch reruns the 2 failed items." in html
    assert reverse("batch_detail", args=[batch.id]) in html


def test_rerun_without_failed_items_says_so(web, user):
    batch = make_batch(user, statuses=("succeeded",), status=BatchStatus.FINISHED)

    response = web.post(reverse("batch_rerun", args=[batch.id]), follow=True)

    assert "has no failed items" in response.content.decode()
    assert Batch.objects.count() == 1


def test_the_results_download_as_csv_in_submission_order(web, user):
    batch = make_batch(user, statuses=("succeeded", "failed", "queued"))

    response = web.get(reverse("batch_results", args=[batch.id, "csv"]))

    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="batch-{batch.id}.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["custom_id"], row["status"]) for row in rows] == [
        ("item-1", "succeeded"),
        ("item-2", "failed"),
        ("item-3", "queued"),
    ]
    assert rows[1]["error_code"] == "invalid_output"


def test_the_results_download_as_jsonl(web, user):
    batch = make_batch(user, statuses=("succeeded", "failed"))

    response = web.get(reverse("batch_results", args=[batch.id, "jsonl"]))

    lines = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert [line["custom_id"] for line in lines] == ["item-1", "item-2"]
    assert lines[0]["result"] == example_output("classify")


def test_an_unknown_results_format_is_404(web, user):
    batch = make_batch(user)

    assert web.get(f"/batches/{batch.id}/results.xlsx").status_code == 404


# --- the list and the jobs -----------------------------------------------------------------------


def test_the_list_shows_each_batch_with_its_progress(web, user):
    running = started(make_batch(user, statuses=("succeeded", "running")), 5)
    done = make_batch(user, kind="summarize", statuses=("succeeded",), status="finished")

    html = web.get(reverse("batch_list")).content.decode()

    assert html.index(str(done.id)[:8]) < html.index(str(running.id)[:8]), "newest first"
    assert 'max="2" value="1"' in html
    assert 'max="1" value="1"' in html
    assert 'data-live-active="true"' in html


def test_the_list_stops_polling_when_every_batch_is_done(web, user):
    make_batch(user, statuses=("succeeded",), status=BatchStatus.FINISHED)

    html = web.get(reverse("batch_list_live")).content.decode()

    assert 'data-live-active="false"' in html


def test_an_empty_list_invites_a_first_batch(web):
    html = web.get(reverse("batch_list")).content.decode()

    assert "No batches yet" in html
    assert reverse("batch_new") in html


def test_a_job_of_a_batch_links_to_its_batch(web, user):
    batch = make_batch(user)
    job = batch.jobs.get(position=2)

    html = web.get(reverse("job_detail", args=[job.id])).content.decode()

    link = f'<a href="{reverse("batch_detail", args=[batch.id])}">batch {str(batch.id)[:8]}</a>'
    assert f"Item 2 of {link}" in html
    assert "item-2" in html


def test_a_job_outside_batches_names_none(web, user):
    batch = make_batch(user)
    Job.objects.filter(batch=batch).update(batch=None)

    html = web.get(reverse("job_detail", args=[Job.objects.first().id])).content.decode()

    assert "data-batch-item" not in html


def test_the_jobs_list_shows_a_batchs_items_in_one_state(web, user):
    batch = make_batch(user, statuses=("succeeded", "failed", "failed"))
    make_batch(user, statuses=("failed",))

    html = web.get(reverse("job_list"), {"batch": batch.id, "status": "failed"}).content.decode()

    assert html.count('class="row-link"') == 2
    assert f"Items of batch {str(batch.id)[:8]}" in html
    assert f'name="batch" value="{batch.id}"' in html, "changing the status keeps the batch"


def test_a_batchs_counts_link_to_its_items_as_jobs(web, user):
    batch = make_batch(user, statuses=("failed",))

    html = web.get(reverse("batch_detail", args=[batch.id])).content.decode()

    assert f"/?batch={batch.id}&amp;status=failed" in html


def test_a_file_over_the_memory_limits_is_read_from_disk(web, settings):
    # Django keeps uploads up to FILE_UPLOAD_MAX_MEMORY_SIZE in memory, larger ones in a
    # temporary file; the body limit (DATA_UPLOAD_MAX_MEMORY_SIZE) is for the other fields.
    text = "A long report about the harbour. " * 2500
    rows = [(f"r-{n}", text) for n in range(1, 41)]
    upload = csv_file(rows)
    assert upload.size > max(
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE, settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    )

    response = web.post(reverse("batch_new"), batch_form(kind="summarize", file=upload))

    assert response.status_code == 302
    assert Batch.objects.get().total == len(rows)
