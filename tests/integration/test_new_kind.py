"""A kind defined only in the tests runs everywhere a built-in kind does: no other code changes.

The `headline` kind (tests/throwaway_kind.py) has no template, form code, setting or registry
line of its own; the API, the web form, a real worker and the pages take it from its module.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from jobs.models import Job
from tests.helpers import unique
from tests.integration.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def headline_worker(start_worker, throwaway_kind):
    return start_worker(AIJOBS_KIND_MODULES=throwaway_kind.__name__)


def test_the_api_and_a_real_worker_run_a_kind_defined_in_the_tests(api, headline_worker):
    text = unique("The harbour town rebuilt its lighthouse with money volunteers raised.")

    created = api.submit("headline", {"text": text, "tone": "catchy"})

    assert created.status == 201, created.body
    job = api.wait(created.body["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["model"] == "claude-haiku-4-5"
    assert job["input"] == {"text": text, "tone": "catchy", "keywords": []}
    assert list(job["result"]) == ["headline", "fits"]
    assert isinstance(job["result"]["fits"], bool)
    assert job["usage"]["input_tokens"] > 0


def test_the_web_form_and_pages_show_a_kind_without_templates_of_its_own(
    client, user, throwaway_kind, headline_worker
):
    client.force_login(user)

    form = client.get(reverse("job_new")).content.decode()
    assert 'value="headline"' in form
    assert throwaway_kind.BLURB in form
    assert 'name="headline-tone"' in form
    assert 'name="headline-keywords"' in form

    response = client.post(
        reverse("job_new"),
        {
            "kind": "headline",
            "idempotency_key": "8c1b7a52-5c51-4f4e-9c1e-0d2b6c2e9a10",
            "text": "A town rebuilt its lighthouse.",
            "headline-tone": "plain",
            "headline-keywords": "lighthouse\n\n town \n",
        },
    )

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.input == {
        "text": "A town rebuilt its lighthouse.",
        "tone": "plain",
        "keywords": ["lighthouse", "town"],
    }
    done = wait_for(
        lambda: Job.objects.filter(pk=job.pk, status="succeeded").first(),
        timeout=60,
        what="the web form's headline job to succeed",
    )
    page = client.get(response["Location"]).content.decode()
    assert '<span class="chip">lighthouse</span>' in page  # the input, shown generically
    assert escape(done.result["headline"]) in page  # the result, shown generically
    assert '<dt class="input-label">Fits</dt>' in page
    assert "i-kind-headline" in page
    assert "Headline" in client.get(reverse("job_list")).content.decode()
