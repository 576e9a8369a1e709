"""Batches in Chromium, on the real stack: upload a file, preview it, submit it, watch it finish
on its page, download its results; and the batch pages under the CSP and at both widths.

With AIJOBS_SCREENSHOTS set (`make screenshots`), the batch pages are saved as screenshots too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from jobs.events import _pulse, batch_topic
from jobs.models import Batch, BatchStatus, Job, WebhookEvent
from tests.browser.conftest import DESKTOP, PHONE
from tests.browser.test_pages import LONG_WEBHOOK, OVERFLOWS
from tests.helpers import unique, webhook_message
from tests.integration.harness import wait_for
from tests.kinds import example_input
from tests.webapp.test_batch_views import make_batch, started
from tests.webapp.test_events import blocked_readers
from webapp.views.batches import PREVIEW_BYTES, PREVIEW_ROWS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLE = Path(settings.BASE_DIR) / "docs" / "examples" / "classify.csv"
# Long enough that the batch's page is first shown unfinished, so reaching "Finished" is the
# page updating itself.
SLOW = "[[sim:latency=1500]]"
BATCH_URL = re.compile(r"/batches/[0-9a-f-]{36}$")
TICKETS = [
    ("t-1", "My parcel is two weeks late and nobody answers the phone."),
    ("t-2", "I was charged twice for the same order this month."),
    ("t-3", "Do you ship to Norway, and how long does it take?"),
    ("t-4", "The invoice shows the wrong address; please correct it."),
    ("t-5", "Can I change the delivery date of my order?"),
]


def tickets_csv(folder: Path, rows, name: str = "tickets.csv") -> Path:
    """A CSV as a spreadsheet exports it: an id and a body column, the texts made unique so the
    simulator keeps each run's items apart."""
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "body"])
        writer.writerows((ref, unique(text) if text else text) for ref, text in rows)
    return path


def slowed(example: Path, folder: Path) -> Path:
    """A copy of an example file whose texts each carry the simulator's latency directive."""
    with example.open(encoding="utf-8") as file:
        rows = list(csv.reader(file))
    text_at = rows[0].index("text")
    for row in rows[1:]:
        row[text_at] = f"{row[text_at]} {SLOW}"
    path = folder / example.name
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return path


def test_a_csv_is_previewed_submitted_watched_and_downloaded(page, worker, tmp_path, snap):
    example = list(csv.DictReader(EXAMPLE.open(encoding="utf-8")))
    page.goto("/batches/new")
    page.locator(".kind-option:has(input[value=classify])").click()
    page.locator('[data-example="classify"]').first.click()
    labels = page.get_by_label("Labels", exact=True)
    expect(labels).not_to_have_value("")

    # A file with a blank text: the preview shows the problem on its row, before submitting.
    bad = tickets_csv(tmp_path, [*TICKETS[:2], ("t-3", ""), *TICKETS[3:]], name="bad.csv")
    page.get_by_label("File").set_input_files(bad)
    expect(page.get_by_label("Text column")).to_have_value("body")
    expect(page.get_by_label("ID column")).to_have_value("id")
    preview = page.locator("#batch-preview")
    expect(preview.locator("tbody tr")).to_have_count(len(TICKETS))
    expect(preview.locator("tr.has-error")).to_have_count(1)
    expect(preview.locator("tr.has-error")).to_contain_text("t-3")
    expect(preview).to_contain_text("Fix the problems below")
    snap(page, "batch-new-error")

    # The example file that ships for the kind, as the demo uses it, its items made slow
    # enough that the batch's page is first shown unfinished.
    page.get_by_label("File").set_input_files(slowed(EXAMPLE, tmp_path))
    expect(page.get_by_label("Text column")).to_have_value("text")
    expect(preview.locator("tr.has-error")).to_have_count(0)
    expect(preview.locator("tbody tr")).to_have_count(PREVIEW_ROWS)
    expect(preview.locator("tbody tr").first).to_contain_text(example[0]["text"][:40])
    expect(preview.locator("[data-estimate]")).to_have_text(re.compile(r"^\$\d"))
    assert Batch.objects.count() == 0, "a preview stores nothing"
    snap(page, "batch-new")

    page.get_by_role("button", name="Submit batch").dblclick()
    expect(page).to_have_url(BATCH_URL)
    batch = Batch.objects.get()
    assert batch.total == len(example)
    assert batch.params["labels"] == example_input("classify")["labels"]
    expect(page.locator("#batch-head .badge")).not_to_have_text("Finished")
    expect(page.locator("[data-live-indicator]")).to_be_visible()
    expect(page.locator("main[data-live-mode=stream]")).to_have_count(1)
    page.evaluate("window.notReloaded = true")

    # The submission kicked the dispatcher: the worker publishes the items and runs them, and
    # the last one's end closes the batch (no beat runs here).
    expect(page.locator("#batch-progress")).to_contain_text(
        f"{len(example)} of {len(example)} finished", timeout=30_000
    )
    expect(page.locator("#batch-head .badge")).to_have_text("Finished")
    expect(page.locator('[data-state="succeeded"] strong')).to_have_text(str(len(example)))
    expect(page.locator("[data-cost]")).not_to_have_text("$0.00")
    expect(page.locator("[data-live-indicator]")).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"
    snap(page, "batch")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    assert [row["custom_id"] for row in rows] == [item["id"] for item in example]
    assert {row["status"] for row in rows} == {"succeeded"}
    jobs = {str(job.id): job for job in Job.objects.filter(batch=batch)}
    assert {row["job_id"] for row in rows} == set(jobs)
    for row in rows:
        chosen = jobs[row["job_id"]].result["labels"]
        assert row["labels"] == "; ".join(chosen)
        assert {label for label in batch.params["labels"] if row[f"label:{label}"] == "1"} == set(
            chosen
        )

    # Each item is a job whose page leads back to its batch.
    page.goto(f"/jobs/{Job.objects.get(batch=batch, position=3).id}")
    page.get_by_role("link", name=f"batch {str(batch.id)[:8]}").click()
    expect(page).to_have_url(BATCH_URL)


def test_a_large_file_is_previewed_from_its_start(page, tmp_path):
    # Rows with a quoted line break early in each, far more than the preview sends: it must
    # cut the file after a whole row, not at the last line break, which is inside a field.
    tail = "more words about the parcel, " * 3
    rows = [(f"r-{n}", f"Ticket {n}.\n{tail}") for n in range(1, 5000)]
    path = tmp_path / "large.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("id", "body"), *rows])
    start = path.read_bytes()[:PREVIEW_BYTES]
    assert start[: start.rindex(b"\n")].count(b'"') % 2 == 1, "the last line break is quoted"
    page.goto("/batches/new?kind=classify")
    page.locator('[data-example="classify"]').first.click()

    page.get_by_label("File").set_input_files(path)

    preview = page.locator("#batch-preview")
    expect(preview.locator("[data-estimate]")).to_have_text(re.compile(r"^about \$\d"))
    expect(preview).to_contain_text(re.compile(r"Itemsabout \d"))
    expect(preview.locator(".error-box")).to_have_count(0)
    expect(preview.locator("tr.has-error")).to_have_count(0)
    expect(preview.locator("tbody tr").first).to_contain_text("Ticket 1.")


def finish_item(batch: Batch, position: int) -> None:
    Job.objects.filter(batch=batch, position=position).update(
        status="succeeded", finished_at=timezone.now(), cost_usd="0.25"
    )


def test_the_batch_page_follows_the_batchs_event_stream(page, user):
    """Counts, cost and the end come from the stream's events (pulsed here as the worker does)."""
    batch = started(make_batch(user, statuses=("running", "running")), 5)
    before = blocked_readers()
    page.goto(f"/batches/{batch.id}")
    expect(page.locator("main[data-live-mode=stream]")).to_have_count(1)
    # Changed once the page's stream waits: only its events can tell the page.
    wait_for(lambda: blocked_readers() > before, timeout=10, what="the page's stream")
    page.evaluate("window.notReloaded = true")

    finish_item(batch, 1)
    _pulse((batch_topic(batch.id),))
    expect(page.locator('[data-state="succeeded"] strong')).to_have_text("1")
    expect(page.locator("#batch-progress")).to_contain_text("1 of 2 finished")
    expect(page.locator("[data-cost]")).to_have_text(re.compile(r"^\$0\.250*$"))

    finish_item(batch, 2)
    Batch.objects.filter(pk=batch.pk).update(status="finished", finished_at=timezone.now())
    _pulse((batch_topic(batch.id),))
    expect(page.locator("#batch-head .badge")).to_have_text("Finished")
    expect(page.locator("[data-time-left]")).to_contain_text("None: the batch is finished")
    expect(page.locator("[data-live-indicator]")).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"


def test_the_batch_page_refreshes_itself_when_its_stream_fails(page, user):
    batch = started(make_batch(user, statuses=("running", "running")), 5)
    page.route("**/api/v1/batches/*/events", lambda route: route.fulfill(status=503, body=""))
    page.goto(f"/batches/{batch.id}")
    expect(page.locator("main[data-live-mode=poll]")).to_have_count(1)

    # No pulse, no stream: the periodic refresh finds the change.
    finish_item(batch, 1)
    expect(page.locator('[data-state="succeeded"] strong')).to_have_text("1")


def test_a_running_batch_can_be_canceled(page, user):
    batch = started(make_batch(user, statuses=("succeeded", "running", "queued", "queued")), 5)
    page.goto(f"/batches/{batch.id}")

    page.get_by_role("button", name="Cancel batch").click()

    expect(page.get_by_text("Batch canceled")).to_be_visible()
    expect(page.locator("#batch-head .badge")).to_have_text("Canceled")
    expect(page.get_by_role("button", name="Cancel batch")).to_have_count(0)
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELED


def test_failed_items_are_rerun_as_a_new_batch(page, user):
    batch = make_batch(user, statuses=("succeeded", "failed", "failed"), status="finished")
    page.goto(f"/batches/{batch.id}")

    page.get_by_role("button", name="Rerun 2 failed").click()

    expect(page.get_by_text("A new batch reruns the 2 failed items.")).to_be_visible()
    rerun = Batch.objects.get(rerun_of=batch)
    expect(page).to_have_url(f"/batches/{rerun.id}")
    page.get_by_role("link", name=str(batch.id)[:8]).click()
    expect(page).to_have_url(f"/batches/{batch.id}")


# --- the batch pages under the CSP, and nothing wider than its box ------------------------------


@pytest.fixture
def batch_pages(user) -> list[str]:
    """The batch pages in every state worth seeing."""
    finished = make_batch(user, statuses=("succeeded",) * 3 + ("failed",), status="finished")
    running = started(make_batch(user, kind="extract", statuses=("succeeded", "running")), 20)
    canceled = make_batch(user, kind="summarize", statuses=("canceled",), status="canceled")
    item = Job.objects.filter(batch=running).first()
    Batch.objects.filter(pk=finished.pk).update(webhook=LONG_WEBHOOK)
    finished.refresh_from_db()
    webhook_message(finished, event=WebhookEvent.BATCH_STARTED, tries=[{"http_status": 204}])
    webhook_message(finished, event=WebhookEvent.BATCH_COMPLETED, tries=[{"error": "timed out"}])
    return [
        "/batches",
        *(f"/batches/{batch.id}" for batch in (finished, running, canceled)),
        "/batches/new",
        f"/jobs/{item.id}",
        f"/?batch={running.id}&status=succeeded",
    ]


def with_preview(page, folder: Path) -> None:
    """The new-batch page once a file is chosen: its preview shown, one row in error."""
    page.goto("/batches/new?kind=classify")
    page.locator('[data-example="classify"]').first.click()
    long_text = "A rather long ticket that goes on and on about a parcel. " * 8
    rows = [("a-very-long-custom-id-for-a-narrow-screen-0123456789", long_text), ("t-2", "")]
    page.get_by_label("File").set_input_files(tickets_csv(folder, rows))
    expect(page.locator("#batch-preview tbody tr")).to_have_count(2)


def test_no_batch_page_breaks_the_content_security_policy(
    page, batch_pages, console_errors, tmp_path, snap
):
    visited = {}
    for url in batch_pages:
        page.goto(url)
        visited[url] = page.evaluate("window.cspViolations")
        if url == "/batches":
            snap(page, "batches")
    with_preview(page, tmp_path)
    visited["/batches/new (preview)"] = page.evaluate("window.cspViolations")

    assert page.evaluate("window.cspViolations") is not None, "the watcher ran"
    assert {url: found for url, found in visited.items() if found} == {}
    assert console_errors == []


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_no_batch_page_is_wider_than_its_box(page, batch_pages, tmp_path, size):
    page.set_viewport_size(size)
    found = {}
    for url in batch_pages:
        page.goto(url)
        found[url] = page.evaluate(OVERFLOWS, size == PHONE)
    with_preview(page, tmp_path)
    found["/batches/new (preview)"] = page.evaluate(OVERFLOWS, size == PHONE)

    problems = {url: problems for url, problems in found.items() if problems}
    assert not problems, json.dumps(problems, indent=1)
