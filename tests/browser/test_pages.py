"""The web UI in Chromium, on the real stack: a live server, a Celery worker, the simulator.

Each main page is also saved as a full-page screenshot at desktop and phone widths.
"""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from jobs import attempts, submission
from jobs.models import Job, Outcome, ProviderCall
from jobs.usage import Usage
from tests.helpers import record_call, unique
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

JOB_URL = re.compile(r"/jobs/[0-9a-f-]{36}$")
# Long enough that the job page is first shown unfinished, so reaching "Succeeded" is the
# page updating itself; short enough to keep the module fast.
SLOW = "[[sim:latency=1500]]"
STORY = (
    "The harbour town voted to rebuild its old lighthouse. Volunteers raised the money in a "
    "year, and the lamp was lit again on a stormy night in October. Fishing boats came home "
    "safely, and the town now plans a small museum about its keepers."
)
RESULTS = {
    "summarize": {
        "summary": "A harbour town rebuilt its lighthouse with money raised by volunteers.",
        "key_points": ["The town voted to rebuild the lighthouse.", "The lamp was lit again."],
    },
    "classify": {"labels": ["local news"], "confidence": 0.91, "rationale": "A town's story."},
    "extract": {"data": {"town_kind": "harbour", "month": "October"}},
}
INPUTS = {
    "summarize": {"text": STORY, "max_words": 60, "style": "paragraph"},
    "classify": {"text": STORY, "labels": ["local news", "sports", "finance"]},
    "extract": {
        "text": STORY,
        "schema": {
            "type": "object",
            "properties": {"town_kind": {"type": "string"}, "month": {"type": "string"}},
            "required": ["town_kind", "month"],
        },
    },
}


def status_badge(page):
    return page.locator("#job-head .badge")


# --- signing in ---------------------------------------------------------------------------------


def test_signing_in_leads_to_the_jobs_list(anonymous_page, user, snap):
    page = anonymous_page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    expect(page.get_by_text("Results come from the Claude simulator")).to_be_visible()
    snap(page, "login")

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.get_by_text("No jobs yet")).to_be_visible()


def test_the_nav_collapses_behind_a_menu_button_on_a_phone(page, screenshot_dir):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    usage_link = page.get_by_role("link", name="Usage")
    expect(usage_link).to_be_hidden()

    page.get_by_role("button", name="Menu").click()
    expect(usage_link).to_be_visible()
    page.screenshot(path=screenshot_dir / "nav-open-phone.png")
    usage_link.click()

    expect(page.get_by_role("heading", name="Usage")).to_be_visible()


# --- submitting and watching jobs ---------------------------------------------------------------


def fill_summarize(page) -> None:
    page.get_by_label("Text", exact=True).fill(unique(f"{STORY} {SLOW}"))
    page.get_by_label("Max words").fill("40")
    page.locator(".segmented").get_by_text("Bullets").click()


def fill_classify(page) -> None:
    page.get_by_label("Text", exact=True).fill(unique(f"{STORY} {SLOW}"))
    page.get_by_label("Labels", exact=True).fill("local news\nsports\nfinance")
    expect(page.locator("[data-label-preview]")).to_contain_text("3 labels")


def fill_extract(page) -> None:
    page.get_by_role("button", name="Invoice").click()
    expect(page.get_by_label("JSON Schema", exact=True)).to_have_value(
        re.compile('"invoice_number"')
    )
    text = page.get_by_label("Text", exact=True)
    text.fill(unique(f"{text.input_value()} {SLOW}"))


FILL = {"summarize": fill_summarize, "classify": fill_classify, "extract": fill_extract}
SHOWN = {
    "summarize": (".key-points li", "lighthouse"),
    "classify": (".label-scores", "local news"),
    "extract": (".code-result", "invoice_number"),
}


@pytest.mark.parametrize("kind", ["summarize", "classify", "extract"])
def test_a_job_from_the_form_succeeds_on_its_page_without_a_reload(page, worker, snap, kind):
    page.goto("/jobs/new")
    page.locator(f".kind-option:has(input[value={kind}])").click()
    FILL[kind](page)
    snap(page, f"new-{kind}")

    # A double click sends one request: the button is disabled on the first.
    page.get_by_role("button", name="Submit job").dblclick()
    expect(page).to_have_url(JOB_URL)
    expect(status_badge(page)).not_to_have_text("Succeeded")
    page.evaluate("window.notReloaded = true")

    expect(status_badge(page)).to_have_text("Succeeded", timeout=20_000)
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"
    selector, text = SHOWN[kind]
    expect(page.locator(selector).first).to_contain_text(text)
    expect(page.locator("#job-calls tbody tr").first).to_contain_text("OK")
    expect(page.locator("[data-live-indicator]")).to_be_hidden()
    assert Job.objects.count() == 1
    snap(page, f"job-{kind}")


def test_bad_input_shows_an_error_next_to_the_field(page, snap):
    page.goto("/jobs/new?kind=classify")
    page.get_by_label("Text", exact=True).fill(STORY)
    page.get_by_label("Labels", exact=True).fill("only one label")
    page.get_by_role("button", name="Submit job").click()

    expect(page.locator("#field-labels .field-error")).to_contain_text("Give at least 2 labels")
    expect(page.get_by_label("Labels", exact=True)).to_have_value("only one label")
    assert Job.objects.count() == 0
    snap(page, "new-classify-error")


def test_a_slow_job_can_be_canceled(page, worker):
    page.goto("/jobs/new")
    page.get_by_label("Text", exact=True).fill(unique(f"{STORY} [[sim:latency=2500]]"))
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(JOB_URL)
    expect(status_badge(page)).to_have_text(re.compile("Queued|Running"))

    page.get_by_role("button", name="Cancel job").click()

    expect(status_badge(page)).to_have_text("Canceled")
    expect(page.get_by_text("Job canceled.")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    # The call under way still ends and is recorded; its answer must not undo the cancel.
    job = Job.objects.get()
    wait_for(
        lambda: job.calls.exclude(outcome=Outcome.PENDING).exists(),
        timeout=15,
        what="the slow call to be recorded",
    )
    job.refresh_from_db()
    assert job.status == "canceled"
    assert job.result is None


# --- tokens -------------------------------------------------------------------------------------


def test_a_token_is_shown_once_copied_and_revoked(page, snap):
    page.goto("/tokens")
    page.get_by_label("Token name").fill("nightly import")
    page.get_by_role("button", name="Create token").click()

    raw = page.locator("#new-token").input_value()
    assert raw.startswith("aij_")
    expect(page.get_by_text("be shown again")).to_be_visible()
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator(".token-created [data-copy-label]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    snap(page, "tokens-created")

    page.goto("/tokens")
    assert raw not in page.content()
    page.get_by_label("Token name").fill("ci pipeline")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("row", name=re.compile("nightly import")).get_by_role(
        "button", name="Revoke"
    ).click()

    expect(page.get_by_text("Token “nightly import” revoked")).to_be_visible()
    revoked = page.get_by_role("row", name=re.compile("nightly import"))
    expect(revoked.locator(".badge")).to_have_text("Revoked")
    snap(page, "tokens")


# --- history: the list and usage with a few weeks of jobs ---------------------------------------


@pytest.fixture
def history(user):
    """Two weeks of jobs of every kind, finished through the services, moved back in time."""
    rng = random.Random(7)
    now = timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for days_ago in range(13, -1, -1):
        for n in range(rng.randint(1, 4)):
            kind = ("summarize", "classify", "extract")[(days_ago + n) % 3]
            job = _finished_job(user, kind, rng)
            # Some time on that UTC day, and never later than now.
            seconds = rng.uniform(0, (now - midnight).total_seconds())
            when = midnight - timedelta(days=days_ago) + timedelta(seconds=seconds)
            Job.objects.filter(pk=job.pk).update(
                created_at=when, started_at=when, finished_at=when + timedelta(seconds=3)
            )
            ProviderCall.objects.filter(job=job).update(created_at=when)
    _unfinished_jobs(user)


def _new_job(user, kind: str) -> Job:
    # Made without a Celery message: the worker must not pick these up.
    return Job.objects.create(
        owner=user, kind=kind, model=settings.AIJOBS_MODELS[kind], input=INPUTS[kind]
    )


def _finished_job(user, kind: str, rng: random.Random) -> Job:
    claimed = attempts.job_claim(job_id=_new_job(user, kind).id).job
    usage = Usage(
        input_tokens=rng.randint(200, 2500),
        output_tokens=rng.randint(60, 900),
        cache_creation_input_tokens=rng.choice([0, 0, 900]),
        cache_read_input_tokens=rng.choice([0, 900, 900, 1800]),
    )
    if rng.random() < 0.1:
        record_call(claimed, attempt=claimed.attempts, usage=usage)
        attempts.job_fail(
            job_id=claimed.id, attempt=claimed.attempts, code="invalid_output", message="no JSON"
        )
    else:
        record_call(claimed, attempt=claimed.attempts, usage=usage, result=RESULTS[kind])
    return claimed


def _unfinished_jobs(user) -> None:
    """A running job, one waiting to retry after a 429, and one canceled."""
    attempts.job_claim(job_id=_new_job(user, "extract").id)
    retrying = attempts.job_claim(job_id=_new_job(user, "classify").id).job
    record_call(retrying, attempt=1, usage=Usage(), outcome=Outcome.RETRYABLE_ERROR)
    attempts.job_schedule_retry(
        job_id=retrying.id, attempt=1, delay=40, code="rate_limited", message="429 from Claude"
    )
    submission.job_cancel(job=_new_job(user, "summarize"))


def test_the_jobs_list_shows_badges_and_filters(page, history, snap):
    page.goto("/")
    rows = page.locator("#job-table tbody tr")
    expect(rows).to_have_count(20)
    expect(page.locator("[data-live-indicator]")).to_be_visible()
    snap(page, "jobs")

    page.get_by_label("Status").select_option("retrying")

    expect(page).to_have_url(re.compile(r"status=retrying"))
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text("Retrying")
    rows.first.click()
    expect(status_badge(page)).to_have_text("Retrying")
    expect(page.locator("#job-result")).to_contain_text("429 from Claude")
    expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
    snap(page, "job-retrying")

    page.goto("/")
    page.get_by_role("link", name="Older").click()
    expect(rows.first).to_be_visible()


def test_the_usage_page_charts_tokens_and_cost(page, history, snap):
    page.goto("/usage")

    charts = page.locator("svg.chart-svg")
    expect(charts).to_have_count(2)
    expect(charts.first.locator("rect.fill-input")).to_have_count(14)
    expect(charts.nth(1).locator("rect.fill-cost")).to_have_count(14)
    expect(page.locator(".kind-usage-row")).to_have_count(4)
    snap(page, "usage")

    page.get_by_role("link", name="7 days").click()
    expect(charts.first.locator("rect.fill-input")).to_have_count(7)
