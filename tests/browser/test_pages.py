"""The web UI in Chromium, on the real stack: the ASGI server, a Celery worker, the simulator.

With AIJOBS_SCREENSHOTS set (`make screenshots`), each main page is also saved as a full-page
screenshot at desktop and phone widths: the README's pictures.
"""

from __future__ import annotations

import json
import random
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from jobs import attempts, kinds, submission
from jobs.events import job_event_publish, owner_topic, topics_pulse
from jobs.models import (
    ApiToken,
    DeliveryStatus,
    Job,
    Outcome,
    ProviderCall,
    WebhookEvent,
)
from jobs.tokens import api_token_create, api_token_revoke
from jobs.usage import Usage
from tests.browser.conftest import DESKTOP, PHONE
from tests.helpers import record_call, unique, webhook_message
from tests.integration.harness import wait_for
from tests.kinds import every_kind, example_input, example_output, stored_input
from tests.webapp.test_events import blocked_readers

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


def test_the_nav_collapses_behind_a_menu_button_on_a_phone(page, snap):
    page.set_viewport_size(PHONE)
    page.goto("/")
    usage_link = page.get_by_role("link", name="Usage")
    expect(usage_link).to_be_hidden()

    page.get_by_role("button", name="Menu").click()
    expect(usage_link).to_be_visible()
    snap(page, "nav-open", sizes=("phone",))
    usage_link.click()

    expect(page.get_by_role("heading", name="Usage")).to_be_visible()


# --- submitting and watching jobs ---------------------------------------------------------------


def first_text(value) -> str | None:
    """The first string in a JSON value: something of the result its page must show."""
    if isinstance(value, str):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((text for item in items if (text := first_text(item))), None)


@every_kind
def test_a_job_from_the_form_succeeds_on_its_page_without_a_reload(page, worker, snap, kind):
    page.goto("/jobs/new")
    page.locator(f".kind-option:has(input[value={kind}])").click()
    page.locator(f'[data-example="{kind}"]').first.click()
    text = page.get_by_label("Text", exact=True)
    expect(text).not_to_have_value("")
    text.fill(unique(f"{text.input_value()} {SLOW}"))
    snap(page, f"new-{kind}")

    # A double click sends one request: the button is disabled on the first.
    page.get_by_role("button", name="Submit job").dblclick()
    expect(page).to_have_url(JOB_URL)
    expect(status_badge(page)).not_to_have_text("Succeeded")
    page.evaluate("window.notReloaded = true")

    expect(status_badge(page)).to_have_text("Succeeded", timeout=20_000)
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"
    job = Job.objects.get()
    assert job.input == stored_input(
        kind, kinds.get_kind(kind).EXAMPLES[0].input | {"text": job.input["text"]}
    )
    expect(page.locator("#job-result")).to_contain_text(first_text(job.result).split("\n")[0])
    expect(page.locator("#job-calls tbody tr").first).to_contain_text("OK")
    expect(page.locator("[data-live-indicator]")).to_be_hidden()
    assert Job.objects.count() == 1
    snap(page, f"job-{kind}")


def test_a_running_jobs_page_shows_its_output_as_it_is_written(page, user):
    """The page follows the job's events (published here as the worker publishes them)."""
    job = Job.objects.create(
        owner=user,
        kind="summarize",
        model=settings.AIJOBS_MODELS["summarize"],
        input={"text": STORY},
    )
    page.goto(f"/jobs/{job.id}")
    expect(page.locator("[data-live-indicator]").first).to_be_visible()
    page.evaluate("window.notReloaded = true")
    Job.objects.filter(pk=job.pk).update(status="running", attempts=1, started_at=timezone.now())
    job_event_publish(job.id, "status", {"status": "running"})
    expect(status_badge(page)).to_have_text("Running")

    job_event_publish(
        job.id,
        "output",
        {"text": '{"summary": "The <b>harbour</b>', "partial": {"summary": "The <b>harbour</b>"}},
    )
    output = page.locator("#job-output")
    expect(output).to_contain_text("The <b>harbour</b>")
    expect(output.locator("b")).to_have_count(0)
    expect(output).to_contain_text("Summary")
    expect(status_badge(page)).to_have_text("Running")

    Job.objects.filter(pk=job.pk).update(
        status="succeeded",
        result={"summary": "The harbour town lit its lighthouse.", "key_points": []},
        finished_at=timezone.now(),
    )
    job_event_publish(job.id, "status", {"status": "succeeded"})
    job_event_publish(job.id, "done", {"status": "succeeded"})
    expect(status_badge(page)).to_have_text("Succeeded")
    expect(page.locator("#job-result")).to_contain_text("The harbour town lit its lighthouse.")
    expect(page.locator("[data-live-indicator]").first).to_be_hidden()
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"


def test_the_jobs_list_follows_one_stream_for_all_its_jobs(page, user):
    """Its rows change on the pulses of the user's jobs (sent here as the worker sends them)."""
    jobs = [_new_job(user, "summarize") for _ in range(8)]
    before = blocked_readers()
    page.goto("/")
    expect(page.locator("#job-table tbody tr")).to_have_count(len(jobs))
    expect(page.locator("[data-live-mode=stream]")).to_have_count(1)
    wait_for(lambda: blocked_readers() > before, timeout=10, what="the page's stream")
    page.evaluate("window.notReloaded = true")

    Job.objects.filter(pk=jobs[0].pk).update(status="succeeded", finished_at=timezone.now())
    topics_pulse([owner_topic(user.pk)])

    expect(page.locator("#job-table .badge", has_text="Succeeded")).to_have_count(1)
    assert page.evaluate("window.notReloaded") is True, "the page updated itself"


def test_bad_input_shows_an_error_next_to_the_field(page, snap):
    page.goto("/jobs/new?kind=classify")
    page.get_by_label("Text", exact=True).fill(STORY)
    page.get_by_label("Labels", exact=True).fill("only one label")
    page.get_by_role("button", name="Submit job").click()

    expect(page.locator("#field-classify-labels .field-error")).to_contain_text(
        "Give at least 2 labels"
    )
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

    # The POST was redirected: a reload fetches the page again, shows the secret no more
    # and creates nothing.
    page.reload()
    expect(page.get_by_role("heading", name="Your tokens")).to_be_visible()
    assert raw not in page.content()
    assert ApiToken.objects.count() == 1
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
            kind = kinds.names()[(days_ago + n) % len(kinds.names())]
            job = _finished_job(user, kind, rng)
            # Some time on that UTC day, and never later than now.
            seconds = rng.uniform(0, (now - midnight).total_seconds())
            when = midnight - timedelta(days=days_ago) + timedelta(seconds=seconds)
            Job.objects.filter(pk=job.pk).update(
                created_at=when, started_at=when, finished_at=when + timedelta(seconds=3)
            )
            # As the real API answers: a request id as long as Anthropic's, a status, a latency.
            ProviderCall.objects.filter(job=job).update(
                created_at=when,
                provider_request_id=f"req_011CV{rng.getrandbits(100):025x}",
                http_status=200,
                latency_ms=rng.randint(800, 9000),
            )
    _unfinished_jobs(user)


def _new_job(user, kind: str) -> Job:
    # Made without a Celery message: the worker must not pick these up.
    return Job.objects.create(
        owner=user,
        kind=kind,
        model=settings.AIJOBS_MODELS[kind],
        input=stored_input(kind, example_input(kind, text=STORY)),
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
        record_call(claimed, attempt=claimed.attempts, usage=usage, result=example_output(kind))
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
    expect(page.locator(".kind-usage-row:not(.kind-usage-head)")).to_have_count(len(kinds.names()))
    snap(page, "usage")

    page.get_by_text("Daily numbers").click()
    total = page.locator(".daily tfoot tr")
    expect(total).to_contain_text("Total")
    expect(total.locator("td").nth(5)).to_have_text(page.locator(".stat-value").first.inner_text())
    snap(page, "usage-daily")

    page.get_by_role("link", name="7 days").click()
    expect(charts.first.locator("rect.fill-input")).to_have_count(7)


# --- every page: the Content-Security-Policy, and nothing wider than its box --------------------

# Elements whose content may be wider than they are: scroll containers, form controls (their
# text scrolls inside), text cut short on purpose with an ellipsis, and text for screen
# readers only (clipped to nothing). Anything else wider than its box is clipped or spills
# over its neighbours. A table scrolls sideways only on a phone: on a desktop it fits.
OVERFLOWS = """(phone) => {
  for (const details of document.querySelectorAll("details")) details.open = true;
  const deliberate = (el, style) =>
    (["auto", "scroll"].includes(style.overflowX) && (phone || !el.matches(".table-scroll"))) ||
    el.matches("input, textarea, select") ||
    (style.textOverflow === "ellipsis" && style.overflowX !== "visible") ||
    style.clip === "rect(0px, 0px, 0px, 0px)";
  const name = (el) =>
    el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    [...el.classList].map((c) => "." + c).join("");
  const found = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.scrollWidth <= el.clientWidth || deliberate(el, getComputedStyle(el))) continue;
    found.push(`${name(el.parentElement)} > ${name(el)}: ${el.scrollWidth} > ${el.clientWidth}`);
  }
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) {
    found.push(`the page scrolls sideways: ${root.scrollWidth} > ${root.clientWidth}`);
  }
  return found;
}"""
DOCS = "/api/v1/docs"


@pytest.fixture
def every_page(user, history) -> list[str]:
    """The signed-in pages in every state worth seeing: jobs of each kind and status, tokens."""
    api_token_create(user=user, name="nightly import")
    api_token_revoke(token=api_token_create(user=user, name="old laptop")[0])
    # The widest calls row: the retrying job's 429, with the longest outcome, and a request id.
    ProviderCall.objects.filter(provider_request_id="").update(
        provider_request_id=f"req_011CV{'9' * 25}", http_status=429, latency_ms=10_312
    )
    jobs = Job.objects.filter(owner=user)
    shown = [jobs.filter(kind=kind, status="succeeded").first() for kind in kinds.names()]
    shown += [jobs.filter(status=status).first() for status in ("retrying", "running", "canceled")]
    with_webhook_log(shown[0])
    return [
        "/",
        "/?status=retrying",
        *(f"/jobs/{job.id}" for job in shown),
        *(f"/jobs/new?kind={kind}" for kind in kinds.names()),
        "/usage",
        "/usage?days=30",
        "/tokens",
        "/webhooks",
        "/webhooks?status=failed",
    ]


# The longest a receiver's URL and answers get on the pages: cut short or wrapped, never wider.
LONG_WEBHOOK = "http://127.0.0.1:8025/hooks/" + "a-rather-long-path-segment/" * 6 + "?token=abc"
LONG_ANSWER = '{"error": "' + "the receiver explains at length why it refused this " * 8 + '"}'


def with_webhook_log(job: Job) -> None:
    """`job` with a webhook and a message in each delivery state, with long answers."""
    Job.objects.filter(pk=job.pk).update(
        webhook=LONG_WEBHOOK, webhook_events=["start", "completed"]
    )
    job.refresh_from_db()
    webhook_message(
        job,
        event=WebhookEvent.JOB_STARTED,
        tries=[
            {"http_status": 503, "latency_ms": 10_042, "response_head": LONG_ANSWER},
            {"error": "connection refused: nothing listens at 127.0.0.1:8025 " * 3},
            {"http_status": 204, "latency_ms": 12},
        ],
    )
    webhook_message(
        job,
        status=DeliveryStatus.FAILED,
        tries=[{"http_status": 410, "latency_ms": 40, "response_head": LONG_ANSWER}],
    )
    webhook_message(job, event=WebhookEvent.JOB_STARTED, status=DeliveryStatus.PENDING)


def revealed_secret(page) -> None:
    page.goto("/webhooks")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#webhook-secret")).to_have_attribute("type", "text")


def created_token(page) -> None:
    page.goto("/tokens")
    page.get_by_label("Token name").fill("a token with a rather long name for a narrow screen")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_be_visible()


def test_no_page_breaks_the_content_security_policy(page, every_page, console_errors, snap):
    visited = {}
    for url in [*every_page, DOCS]:
        page.goto(url)
        if url == DOCS:
            # Swagger UI drew the operations: its scripts and styles ran under the policy.
            expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
            expect(page.get_by_text("Results come from the Claude simulator")).to_be_visible()
            snap(page, "api-docs")
        visited[url] = page.evaluate("window.cspViolations")
    created_token(page)
    visited["/tokens (created)"] = page.evaluate("window.cspViolations")
    revealed_secret(page)
    visited["/webhooks (secret shown)"] = page.evaluate("window.cspViolations")
    page.context.clear_cookies()
    page.goto("/login/")
    visited["/login/"] = page.evaluate("window.cspViolations")

    assert page.evaluate("window.cspViolations") is not None, "the watcher ran"
    assert {url: found for url, found in visited.items() if found} == {}
    assert console_errors == []


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_no_page_is_wider_than_its_box(page, every_page, size):
    page.set_viewport_size(size)
    found = {}
    for url in every_page:
        page.goto(url)
        found[url] = page.evaluate(OVERFLOWS, size == PHONE)
    called = every_page[every_page.index("/?status=retrying") + 1]
    page.goto(called)
    found[called] = page.evaluate(OVERFLOWS, size == PHONE)
    created_token(page)
    found["/tokens (created)"] = page.evaluate(OVERFLOWS, size == PHONE)
    revealed_secret(page)
    found["/webhooks (secret shown)"] = page.evaluate(OVERFLOWS, size == PHONE)
    page.context.clear_cookies()
    page.goto("/login/")
    found["/login/"] = page.evaluate(OVERFLOWS, size == PHONE)

    problems = {url: problems for url, problems in found.items() if problems}
    assert not problems, json.dumps(problems, indent=1)
