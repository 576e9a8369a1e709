"""The HTML pages, through Django's test client on the real database (no worker)."""

from __future__ import annotations

import hashlib
import re
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from jobs import attempts, kinds, limits, submission
from jobs.errors import IdempotencyKeyInFlight
from jobs.models import ApiToken, Job, UserLimits
from jobs.usage import Usage
from tests.helpers import record_call
from tests.kinds import every_kind, example_input, example_output, stored_input
from webapp.forms import JobForm
from webapp.templatetags.aijobs import pretty_json, usd
from webapp.views.charts import axis

pytestmark = pytest.mark.django_db

STORY = "The harbour town rebuilt its lighthouse. Volunteers raised the money in a year."
SCRIPT = "<script>alert('pwned')</script>"


def form_data(kind: str, raw_input: dict) -> dict:
    """What a browser posts for this input: the page's own field values, checkboxes as "on"."""
    values = JobForm().values_for(kind, raw_input)
    data = {"kind": kind}
    for name, value in values.items():
        if value is True:
            data[name] = "on"
        elif value is not False:
            data[name] = value
    return data


def story_form(kind: str, **changes) -> dict:
    return form_data(kind, example_input(kind, text=STORY)) | changes


def with_script(value):
    """Every string in a JSON value replaced by SCRIPT."""
    if isinstance(value, str):
        return SCRIPT
    if isinstance(value, list):
        return [with_script(item) for item in value]
    if isinstance(value, dict):
        return {key: with_script(item) for key, item in value.items()}
    return value


@pytest.fixture
def web(client, user):
    client.force_login(user)
    return client


def submit(owner, kind="summarize", **input):
    return submission.job_submit(owner=owner, kind=kind, input={"text": STORY, **input}).job


def succeed(job, result):
    """Take the job through a worker's steps (claim, one call, success) ending with `result`."""
    claimed = attempts.job_claim(job_id=job.id).job
    record_call(
        claimed,
        attempt=claimed.attempts,
        usage=Usage(input_tokens=1200, output_tokens=300, cache_read_input_tokens=800),
        result=result,
    )
    job.refresh_from_db()
    return job


def post_form(web, values, key=None):
    data = {"idempotency_key": key or str(uuid.uuid4()), **values}
    return web.post(reverse("job_new"), data)


def field_block(html: str, field: str) -> str:
    """The markup of one form field's block (label, widget, help, errors)."""
    match = re.search(rf'<div class="field[^"]*" id="field-{field}">(.*?)\n</div>', html, re.S)
    assert match, f"no field block for {field}"
    return match.group(1)


# --- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/jobs/new", "/jobs/live", "/usage", "/tokens", f"/jobs/{uuid.uuid4()}"],
)
def test_pages_require_login(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_the_login_page_signs_in_and_redirects_to_the_jobs(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content

    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct-horse-battery"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_a_wrong_password_is_refused_on_the_login_page(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_logout_is_a_post_and_ends_the_session(web):
    response = web.post(reverse("logout"))

    assert response.status_code == 302
    assert web.get("/").status_code == 302


@pytest.mark.parametrize("name", ["job_list", "job_new", "usage", "tokens"])
def test_each_page_renders_for_a_logged_in_user(web, name):
    response = web.get(reverse(name))

    assert response.status_code == 200
    assert b'<nav id="nav"' in response.content


@every_kind
def test_a_job_page_renders_for_each_kind(web, user, kind):
    job = submission.job_submit(owner=user, kind=kind, input=example_input(kind)).job

    response = web.get(reverse("job_detail", args=[job.id]))

    assert response.status_code == 200
    assert str(job.id).encode() in response.content
    assert b"Cancel job" in response.content


def test_another_users_job_is_404_everywhere(web, other_user):
    job = submit(other_user)

    assert web.get(reverse("job_detail", args=[job.id])).status_code == 404
    assert web.get(reverse("job_detail_live", args=[job.id])).status_code == 404
    assert web.post(reverse("job_cancel", args=[job.id])).status_code == 404
    job.refresh_from_db()
    assert job.status == "queued"


def test_the_nav_links_to_every_section_flower_and_the_api_docs(web, settings):
    settings.AIJOBS_FLOWER_URL = "http://flower.example:5555"

    html = web.get(reverse("job_list")).content.decode()

    for url in ("/jobs/new", "/usage", "/tokens", "/api/v1/docs", "http://flower.example:5555"):
        assert f'href="{url}"' in html
    assert f'action="{reverse("logout")}"' in html


# --- submitting ---------------------------------------------------------------------------------


def test_the_form_carries_a_fresh_idempotency_key_and_csrf_token(web):
    keys = [
        re.search(r'name="idempotency_key" value="([^"]+)"', web.get("/jobs/new").content.decode())
        for _ in range(2)
    ]

    assert all(keys)
    assert keys[0].group(1) != keys[1].group(1)
    assert uuid.UUID(keys[0].group(1))
    assert b'name="csrfmiddlewaretoken"' in web.get("/jobs/new").content


@every_kind
def test_the_kind_in_the_query_string_is_preselected(web, kind):
    html = web.get(f"/jobs/new?kind={kind}").content.decode()

    assert re.search(rf'value="{kind}" checked', html)
    assert f'class="kind-fields" data-kind="{kind}">' in html
    others = set(kinds.names()) - {kind}
    assert all(f'class="kind-fields" data-kind="{other}" hidden' in html for other in others)


@every_kind
def test_the_form_offers_every_kind_with_its_blurb_fields_and_examples(web, kind):
    html = web.get("/jobs/new").content.decode()
    module = kinds.get_kind(kind)

    assert module.BLURB in html
    for key in example_input(kind):
        name = key if key == "text" else f"{kind}-{key}"
        assert f'name="{name}"' in html
    for index, example in enumerate(module.EXAMPLES):
        assert f'data-example="{kind}" data-example-index="{index}">{example.name}<' in html


@every_kind
def test_submitting_each_kind_stores_its_input_and_redirects_to_the_job(web, user, kind):
    response = post_form(web, story_form(kind))

    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("job_detail", args=[job.id])
    assert job.owner == user
    assert job.kind == kind
    assert job.input == stored_input(kind, example_input(kind, text=STORY))


@pytest.mark.parametrize(
    ("kind", "example"),
    [(kind, example) for kind, module in kinds.KINDS.items() for example in module.EXAMPLES],
    ids=lambda value: getattr(value, "name", value),
)
def test_every_example_as_the_form_fills_it_in_makes_that_job(web, kind, example):
    post_form(web, form_data(kind, example.input))

    assert Job.objects.get().input == stored_input(kind, example.input)


def test_the_model_can_be_chosen_per_job(web):
    post_form(web, story_form("summarize", model="claude-sonnet-4-6"))

    assert Job.objects.get().model == "claude-sonnet-4-6"


def test_no_model_chosen_is_the_kinds_default(web, settings):
    post_form(web, story_form("extract", model=""))

    assert Job.objects.get().model == settings.AIJOBS_MODELS["extract"]


def test_blank_optional_fields_take_the_kinds_defaults(web):
    post_form(
        web, {"kind": "summarize", "text": STORY, "summarize-max_words": "", "summarize-style": ""}
    )

    assert Job.objects.get().input == {"text": STORY, "max_words": 120, "style": "paragraph"}


def test_only_the_chosen_kinds_fields_are_read(web):
    post_form(web, {**story_form("summarize"), "classify-labels": "a\nb", "extract-schema": "{"})

    assert "labels" not in Job.objects.get().input


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (("classify", {"classify-labels": "only one"}), "classify-labels", "Give at least 2"),
        (("classify", {"classify-labels": "a\nA"}), "classify-labels", "labels must be distinct"),
        (("classify", {"classify-labels": f"a\n{'x' * 101}"}), "classify-labels", "Line 2: String"),
        (("summarize", {"summarize-max_words": "5"}), "summarize-max_words", "greater than or"),
        (("summarize", {"summarize-max_words": "many"}), "summarize-max_words", "whole number"),
        (("summarize", {"text": "   "}), "text", "must not be empty"),
        (("extract", {"extract-schema": "{nope"}), "extract-schema", "Not valid JSON"),
        (("extract", {"extract-schema": ""}), "extract-schema", "This field is required."),
        (("extract", {"extract-schema": '{"type": "string"}'}), "extract-schema", "top level"),
    ],
)
def test_invalid_input_shows_errors_next_to_the_fields_and_stores_nothing(
    web, values, field, message
):
    kind, changes = values
    response = post_form(web, story_form(kind, **changes))

    assert response.status_code == 200
    block = field_block(response.content.decode(), field)
    assert 'class="field-error"' in block
    assert message in block
    assert Job.objects.count() == 0


def test_an_invalid_form_keeps_the_values_and_the_key(web):
    key = str(uuid.uuid4())

    html = post_form(web, story_form("classify", **{"classify-labels": "solo"}), key=key)
    html = html.content.decode()

    assert f'value="{key}"' in html
    assert "solo</textarea>" in html
    assert re.search(r'value="classify" checked', html)


def test_a_double_post_of_one_form_makes_one_job(web):
    key = str(uuid.uuid4())

    first = post_form(web, story_form("summarize"), key=key)
    second = post_form(web, story_form("summarize"), key=key)

    assert Job.objects.count() == 1
    assert first["Location"] == second["Location"]


def test_a_used_form_sent_again_with_other_values_gets_a_new_key(web):
    key = str(uuid.uuid4())
    post_form(web, story_form("summarize"), key=key)

    response = post_form(web, {**story_form("summarize"), "text": "Something else."}, key=key)

    html = response.content.decode()
    assert response.status_code == 200
    assert "already used to create a job" in html
    assert f'value="{key}"' not in html
    assert Job.objects.count() == 1


def test_a_post_racing_the_first_one_waits_then_replays_its_job(web, user, monkeypatch):
    job = submit(user)
    answers = iter([IdempotencyKeyInFlight("busy"), submission.Submission(job, replayed=True)])

    def job_submit(**kwargs):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(submission, "job_submit", job_submit)

    response = post_form(web, story_form("summarize"))

    assert response["Location"] == reverse("job_detail", args=[job.id])


def test_a_spent_budget_is_said_on_the_form_and_nothing_is_stored(web, user):
    UserLimits.objects.create(user=user, budget_usd=Decimal(0))

    response = post_form(web, story_form("summarize"))

    assert response.status_code == 200
    assert "The budget of $0.00 per month is spent." in response.content.decode()
    assert Job.objects.count() == 0


# --- the jobs list ------------------------------------------------------------------------------


def test_the_list_shows_status_kind_age_tokens_and_cost(web, user):
    job = succeed(submit(user), {"summary": "S.", "key_points": ["K."]})

    html = web.get("/").content.decode()

    assert 'class="badge badge-succeeded"' in html
    assert "Summarize" in html
    assert "just now" in html
    assert "2,300" in html, "all four token counts added up"
    assert usd(job.cost_usd) in html


def test_the_list_filters_by_status_and_kind(web, user):
    succeed(submit(user, "summarize"), {"summary": "S.", "key_points": ["K."]})
    queued = submit(user, "classify", labels=["a", "b"])

    html = web.get("/?status=queued").content.decode()
    assert str(queued.id)[:8] in html
    assert html.count('class="row-link"') == 1

    html = web.get("/?kind=summarize&status=queued").content.decode()
    assert "No jobs match" in html


def test_the_list_pages_with_cursors(web, user):
    for n in range(23):
        submit(user, text=f"job number {n}")

    first = web.get("/").content.decode()
    cursor = re.search(r'href="/\?cursor=([^"]+)"', first).group(1)
    second = web.get(f"/?cursor={cursor}").content.decode()

    assert first.count('class="row-link"') == 20
    assert second.count('class="row-link"') == 3
    assert "job number 22" in first
    assert "job number 0" in second
    assert 'href="/">' in second, "a link back to the newest jobs"


def test_a_broken_cursor_shows_the_first_page(web, user):
    submit(user)

    response = web.get("/?cursor=not-a-cursor")

    assert response.status_code == 200
    assert response.content.decode().count('class="row-link"') == 1


def test_the_list_polls_only_while_a_job_is_unfinished(web, user):
    job = submit(user)
    assert 'data-live-active="true"' in web.get("/").content.decode()

    fragment = web.get("/jobs/live").content.decode()
    assert 'id="job-table" data-live-part' in fragment
    assert "<html" not in fragment, "a fragment, not a page"

    succeed(job, {"summary": "S.", "key_points": ["K."]})
    assert 'data-live-active="false"' in web.get("/jobs/live").content.decode()


# --- one job ------------------------------------------------------------------------------------


def test_the_job_page_shows_result_calls_and_usage(web, user):
    job = succeed(submit(user), {"summary": "Short.", "key_points": ["First", "Second"]})

    html = web.get(reverse("job_detail", args=[job.id])).content.decode()

    assert "<li>First</li>" in html
    assert 'class="badge badge-ok"' in html
    assert "Cancel job" not in html
    assert 'data-live-active="false"' in html


def test_a_classify_result_shows_labels_with_a_confidence_bar(web, user):
    job = submit(user, "classify", labels=["news", "sports"])
    succeed(job, {"labels": ["news"], "confidence": 0.87, "rationale": "It reports."})

    html = web.get(reverse("job_detail", args=[job.id])).content.decode()

    assert '<meter class="meter" min="0" max="100" value="87" aria-label="Confidence">' in html
    assert '<span class="chip chip-muted">sports</span>' in html


def test_the_detail_fragment_holds_the_changing_parts(web, user):
    job = submit(user)

    fragment = web.get(reverse("job_detail_live", args=[job.id])).content.decode()

    for part in ("job-head", "job-result", "job-facts", "job-calls"):
        assert f'id="{part}" data-live-part' in fragment
    assert 'data-live-active="true"' in fragment


def test_a_retrying_job_shows_its_last_error_and_next_retry(web, user):
    job = submit(user)
    claimed = attempts.job_claim(job_id=job.id).job
    attempts.job_schedule_retry(
        job_id=job.id, attempt=claimed.attempts, delay=30, code="rate_limited", message="429"
    )

    html = web.get(reverse("job_detail", args=[job.id])).content.decode()

    assert "Next retry" in html
    assert "rate_limited" in html
    assert "Retrying in" in html


def test_cancel_cancels_an_unfinished_job(web, user):
    job = submit(user)

    response = web.post(reverse("job_cancel", args=[job.id]), follow=True)

    job.refresh_from_db()
    assert job.status == "canceled"
    assert response.redirect_chain[-1][0] == reverse("job_detail", args=[job.id])
    assert "Job canceled." in response.content.decode()


def test_cancel_of_a_finished_job_answers_409_and_says_why(web, user):
    job = succeed(submit(user), {"summary": "S.", "key_points": ["K."]})

    response = web.post(reverse("job_cancel", args=[job.id]))

    assert response.status_code == 409
    assert "already succeeded, so it cannot be canceled" in response.content.decode()
    job.refresh_from_db()
    assert job.status == "succeeded"


@pytest.mark.parametrize("finish", ["succeed", "fail", "cancel"])
def test_a_finished_job_is_rerun_as_a_new_linked_job(web, user, finish):
    job = submit(user, "classify", labels=["a", "b"])
    if finish == "succeed":
        succeed(job, {"labels": ["a"], "confidence": 0.5, "rationale": "R."})
    elif finish == "fail":
        claimed = attempts.job_claim(job_id=job.id).job
        attempts.job_fail(job_id=job.id, attempt=claimed.attempts, code="bad_request", message="x")
    else:
        submission.job_cancel(job=job)
    page = web.get(reverse("job_detail", args=[job.id])).content.decode()
    assert f'action="{reverse("job_rerun", args=[job.id])}"' in page

    response = web.post(reverse("job_rerun", args=[job.id]))

    rerun = Job.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302
    assert response["Location"] == reverse("job_detail", args=[rerun.id])
    assert (rerun.rerun_of_id, rerun.kind, rerun.input, rerun.model) == (
        job.id,
        job.kind,
        job.input,
        job.model,
    )
    assert rerun.status == "queued"
    page = web.get(response["Location"]).content.decode()
    assert f'href="{reverse("job_detail", args=[job.id])}"' in page, "links to the original"


def test_an_unfinished_job_offers_no_rerun_and_refuses_one_with_409(web, user):
    job = submit(user)

    assert (
        reverse("job_rerun", args=[job.id])
        not in web.get(reverse("job_detail", args=[job.id])).content.decode()
    )
    response = web.post(reverse("job_rerun", args=[job.id]))

    assert response.status_code == 409
    assert "cannot be rerun now" in response.content.decode()
    assert Job.objects.count() == 1


def test_a_rerun_is_refused_while_the_budget_is_spent(web, user):
    job = succeed(submit(user), {"summary": "S.", "key_points": ["K."]})
    UserLimits.objects.create(user=user, budget_usd=Decimal(0))
    limits._cache.clear()  # limits are cached per process for a few seconds

    response = web.post(reverse("job_rerun", args=[job.id]))

    assert response.status_code == 402
    assert "budget" in response.content.decode()
    assert Job.objects.count() == 1


def test_another_users_job_cannot_be_rerun(web, other_user):
    job = succeed(submit(other_user), {"summary": "S.", "key_points": ["K."]})

    assert web.post(reverse("job_rerun", args=[job.id])).status_code == 404
    assert Job.objects.count() == 1


def test_cancel_is_post_only(web, user):
    job = submit(user)

    assert web.get(reverse("job_cancel", args=[job.id])).status_code == 405


# --- untrusted text is escaped ------------------------------------------------------------------


@every_kind
def test_script_in_input_and_result_is_rendered_escaped(web, user, kind):
    job = submission.job_submit(owner=user, kind=kind, input=example_input(kind)).job
    # Every string a user could have chosen, as the pages would have to show it.
    hostile = with_script(example_input(kind)) | {"text": f"Hello {SCRIPT}"}
    Job.objects.filter(pk=job.pk).update(input=hostile)
    succeed(job, with_script(example_output(kind)))

    for path in (reverse("job_detail", args=[job.id]), "/"):
        html = web.get(path).content.decode()
        assert SCRIPT not in html
        assert "&lt;script&gt;" in html


def test_a_field_error_echoing_input_is_escaped(web):
    html = post_form(web, story_form("classify", **{"classify-labels": SCRIPT})).content.decode()

    assert SCRIPT not in html


# --- tokens -------------------------------------------------------------------------------------


def test_creating_a_token_shows_it_once_and_stores_only_its_hash(web, user):
    created = web.post(reverse("tokens"), {"name": "nightly import"})
    assert created.status_code == 302, "Post/Redirect/Get: a reload resends no POST"
    assert created["Location"] == reverse("tokens")

    response = web.get(created["Location"])

    html = response.content.decode()
    raw = re.search(r'id="new-token" type="text" value="(aij_[^"]+)"', html).group(1)
    token = ApiToken.objects.get(user=user)
    assert "Token “nightly import” created" in html
    assert "be shown again" in html
    assert response["Cache-Control"].startswith("max-age=0")
    assert token.name == "nightly import"
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {token.digest, token.prefix}
    reloaded = web.get(reverse("tokens")).content.decode()
    assert raw not in reloaded
    assert token.prefix in reloaded
    assert ApiToken.objects.count() == 1


def test_a_token_needs_a_name(web):
    response = web.post(reverse("tokens"), {"name": ""})

    assert "This field is required." in field_block(response.content.decode(), "name")
    assert ApiToken.objects.count() == 0


def test_revoking_a_token_marks_it_revoked(web, user):
    web.post(reverse("tokens"), {"name": "ci"})
    token = ApiToken.objects.get(user=user)

    response = web.post(reverse("token_revoke", args=[token.id]), follow=True)

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "revoked" in response.content.decode()
    assert 'class="badge badge-revoked"' in response.content.decode()


def test_another_users_token_cannot_be_revoked(web, other_user):
    from jobs.tokens import api_token_create

    token, _ = api_token_create(user=other_user, name="theirs")

    assert web.post(reverse("token_revoke", args=[token.id])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


# --- usage --------------------------------------------------------------------------------------


def test_the_usage_page_charts_tokens_and_cost_per_day_and_kind(web, user):
    succeed(submit(user), {"summary": "S.", "key_points": ["K."]})

    html = web.get(reverse("usage")).content.decode()

    assert html.count('<svg class="chart-svg"') == 2
    assert 'class="fill-input"' in html, "the day's bar"
    assert '<meter class="hbar hbar-input" min="0" max="100" value="100.0"' in html, "the kind's"
    assert "2,300" in html
    assert "Summarize" in html
    assert "Extract" in html


def test_the_usage_totals_add_up_with_the_cache_tokens(web, user):
    succeed(submit(user), {"summary": "S.", "key_points": ["K."]})
    claimed = attempts.job_claim(
        job_id=submit(user, "extract", schema=example_input("extract")["schema"]).id
    ).job
    record_call(claimed, attempt=1, usage=Usage(input_tokens=100, cache_creation_input_tokens=50))

    html = web.get(reverse("usage")).content.decode()

    # 1,200 + 300 + 800 from the summarize call, 100 + 50 from the extract one.
    assert '<p class="stat-value">2,450</p>' in html
    assert "1,300 input + 300 output + 50 cache write + 800 cache read" in html
    footer = html[html.index("<tfoot>") : html.index("</tfoot>")]
    cells = re.findall(r'<td class="num">([^<]+)</td>', footer)
    assert cells[:6] == ["2", "1,300", "300", "50", "800", "2,450"]


def test_the_usage_words_agree_with_their_numbers(web, user):
    succeed(submit(user), {"summary": "S.", "key_points": ["K."]})
    job = attempts.job_claim(job_id=submit(user, "classify", labels=["a", "b"]).id).job
    for attempt in (1, 2):
        record_call(job, attempt=attempt, usage=Usage(input_tokens=1))

    html = web.get(reverse("usage")).content.decode()

    assert '1<span class="unit"> call</span>' in html, "summarize"
    assert '2<span class="unit"> calls</span>' in html, "classify"
    assert '0<span class="unit"> calls</span>' in html, "extract"
    assert '2<span class="unit"> tokens</span>' in html
    assert '2,300<span class="unit"> tokens</span>' in html
    assert '0<span class="unit"> tokens</span>' in html
    assert "in 3 calls</title>" in html, "today's bar"
    assert "in 0 calls</title>" in html, "an empty day"
    assert re.search(r": 2,302 tokens \(Input 1,202 · ", html), "today's token bar"


def test_a_job_with_one_token_says_token(web, user):
    job = attempts.job_claim(job_id=submit(user).id).job
    record_call(job, attempt=1, usage=Usage(output_tokens=1))

    html = web.get(reverse("job_detail", args=[job.id])).content.decode()

    assert '<span class="muted">1 token</span>' in html


@pytest.mark.parametrize("days", ["7", "30", "bogus"])
def test_the_usage_period_can_be_chosen(web, days):
    html = web.get(reverse("usage"), {"days": days}).content.decode()

    shown = 14 if days == "bogus" else int(days)
    assert f"{shown} days</span>" in html


# --- the simulated banner -----------------------------------------------------------------------


SIMULATED = "Results come from the Claude simulator, not Claude"


def test_the_simulated_banner_shows_on_every_page_when_simulated(web, user, settings):
    settings.AIJOBS_SIMULATED = True
    job = submit(user)

    pages = [reverse(name) for name in ("job_list", "job_new", "usage", "tokens")]
    for url in [*pages, reverse("job_detail", args=[job.id]), "/api/v1/docs"]:
        assert SIMULATED in web.get(url).content.decode(), url


@pytest.mark.parametrize(
    ("simulated", "said", "not_said"),
    [
        (True, "The Claude simulator is working on it (simulated mode).", "Claude is working"),
        (False, "Claude is working on it.", "simulator"),
    ],
)
def test_a_running_job_says_who_is_working_on_it(web, user, settings, simulated, said, not_said):
    settings.AIJOBS_SIMULATED = simulated
    job = attempts.job_claim(job_id=submit(user).id).job

    result = web.get(reverse("job_detail_live", args=[job.id])).content.decode()

    assert said in result
    assert not_said not in result


def test_the_simulated_banner_shows_on_the_login_page(client, settings):
    settings.AIJOBS_SIMULATED = True

    assert SIMULATED in client.get(reverse("login")).content.decode()


def test_no_simulated_banner_with_the_real_claude(web, settings):
    settings.AIJOBS_SIMULATED = False

    assert "Claude simulator" not in web.get("/").content.decode()
    assert "Claude simulator" not in web.get("/api/v1/docs").content.decode()


@pytest.mark.parametrize("name", ["app.css", "app.js", "job-form.js", "favicon.svg"])
def test_the_static_files_are_served_with_debug_off(client, settings, name):
    settings.DEBUG = False

    response = client.get(f"/static/webapp/{name}")

    assert response.status_code == 200
    assert response.get("Last-Modified"), "so browsers can revalidate instead of refetching"


@pytest.mark.parametrize("name", ["job_new", "usage", "tokens"])
def test_a_page_with_a_trailing_slash_opens_the_page(web, name):
    response = web.get(f"{reverse(name)}/", {"days": "7"}, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(f"{reverse(name)}?days=7", 302)]
    assert response.resolver_match.url_name == name


def test_jobs_redirects_to_the_list_keeping_the_filters(web):
    response = web.get("/jobs?status=failed")

    assert response.status_code == 302
    assert response["Location"] == "/?status=failed"


# --- formatting and chart helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "min_step", "expected"),
    [
        (12_345, 1, (5_000, 15_000)),
        (3_000, 1, (1_000, 3_000)),
        (3, 1, (1, 3)),
        (0.0123, 0, (0.005, 0.015)),
        (0, 1, (1, 4)),
    ],
)
def test_the_chart_axis_has_round_steps_and_fits_the_largest_bar(largest, min_step, expected):
    step, top = axis(largest, min_step=min_step)

    assert (step, top) == pytest.approx(expected)
    assert top >= largest


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal(0), "$0.00"),
        (Decimal("12.3"), "$12.30"),
        (Decimal("0.0123"), "$0.0123"),
        (Decimal("0.000120"), "$0.000120"),
        ("nonsense", "—"),
    ],
)
def test_money_is_shown_with_the_precision_small_amounts_need(amount, shown):
    assert usd(amount) == shown


def test_pretty_json_colours_tokens_and_escapes_strings():
    html = pretty_json({"name": SCRIPT, "n": 3, "ok": True, "note": "1 true"})

    assert '<span class="j-key">&quot;name&quot;</span>' in html
    assert '<span class="j-number">3</span>' in html
    assert '<span class="j-literal">true</span>' in html
    assert '<span class="j-string">&quot;1 true&quot;</span>' in html, "words in strings stay"
    assert "<script>" not in html
