"""Jobs: the list, the new-job form, a job's page, cancel, and the live fragments they fetch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.text import capfirst
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs import selectors, submission
from jobs.errors import (
    BudgetExceeded,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    JobAlreadyFinished,
    JobNotFinished,
    SubmissionRateLimited,
)
from jobs.events import owner_topic
from jobs.models import Job
from jobs.selectors import Page
from webapp import sse
from webapp.api import SERVICE_ERROR_STATUS, release_connection
from webapp.forms import JobFilterForm, JobForm

PAGE_SIZE = 20
T = TypeVar("T")
# A second POST of one form while the first is still uncommitted (a double click without
# JavaScript) waits this long for the first to commit, then replays its job.
IN_FLIGHT_WAIT_SECONDS = 2.0
IN_FLIGHT_POLL_SECONDS = 0.05


# --- list ----------------------------------------------------------------------------------------


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/list.html", _list_context(request))


@login_required
@require_GET
def job_list_live(request: HttpRequest) -> HttpResponse:
    """The list's table alone, re-fetched when the user's jobs change (job_list_events) while
    one on the page is unfinished."""
    return render(request, "jobs/list_live.html", _list_context(request))


@login_required
@require_GET
async def job_list_events(request: HttpRequest) -> StreamingHttpResponse:
    """A `change` event (at most two a second) whenever any of the user's jobs or batches
    changes state: the jobs and batches lists re-fetch their table on it. One stream for a
    whole page, however many unfinished jobs it shows (a browser opens six connections to a
    server at most)."""
    user = await request.auser()
    # Signing in read the session and the user; the stream needs no connection after that.
    await sync_to_async(release_connection)()
    topic = owner_topic(user.pk)
    return sse.event_response(sse.pulse_stream(topic, await sse.resume_point(request, topic)))


def _list_context(request: HttpRequest) -> dict[str, Any]:
    form = JobFilterForm(request.GET)
    filters = form.filters()
    page = listed(selectors.job_list, owner=request.user, filters=filters)
    return {
        "filters": form,
        "filtered": bool(filters["status"] or filters["kind"] or filters["batch"]),
        "page": page,
        "first_page": filters["cursor"] is None,
        "live": any(not job.is_finished for job in page.items),
    }


def listed(
    select: Callable[..., Page], *, owner: AbstractBaseUser, filters: dict[str, Any]
) -> Page:
    """A page of a list: select(owner, PAGE_SIZE, filters). A cursor from an old or edited link
    shows the first page rather than an error, and is dropped from `filters`."""
    try:
        return select(owner=owner, limit=PAGE_SIZE, **filters)
    except InvalidInput:
        filters["cursor"] = None
        return select(owner=owner, limit=PAGE_SIZE, **filters)


# --- submit --------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = JobForm.blank(kind=request.GET.get("kind"))
    else:
        form = JobForm(request.POST)
        job = _submit(request.user, form) if form.is_valid() else None
        if job is not None:
            return redirect("job_detail", job_id=job.id)
    groups = form.kind_groups()
    examples = {group.name: group.examples for group in groups}
    context = {"form": form, "kind_groups": groups, "kind_examples": examples}
    return render(request, "jobs/new.html", context)


def _submit(owner: AbstractBaseUser, form: JobForm) -> Job | None:
    """The job this form makes (or made already), or None with the errors added to the form."""

    def submit(key: str) -> Job:
        return submission.job_submit(
            owner=owner,
            kind=form.cleaned_data["kind"],
            input=form.job_input(),
            model=form.job_model(),
            idempotency_key=key,
        ).job

    return submit_form(form, submit, noun="job")


def submit_form(form: JobForm, submit: Callable[[str], T], *, noun: str) -> T | None:
    """submit(the form's idempotency key), or None with the service's errors added to the form.

    A concurrent request with the same key (a double click without JavaScript) is waited out,
    then its answer replayed. `noun` names what the form creates ("job", "batch").
    """
    try:
        return _waiting_in_flight(submit, str(form.cleaned_data["idempotency_key"]))
    except InvalidInput as exc:
        form.add_service_errors(exc.details)
    except IdempotencyKeyReused:
        # The form was submitted before (the user came back and edited it): a new submission
        # needs a new key, which the re-rendered form now carries.
        form.renew_idempotency_key()
        form.add_error(
            None,
            f"This form was already used to create a {noun}. Check the values and submit "
            f"again to create another one.",
        )
    except IdempotencyKeyInFlight:
        form.add_error(None, f"This form is still being submitted; see the {noun}s list.")
    except (SubmissionRateLimited, BudgetExceeded) as exc:
        # Nothing was stored, so the same form (and key) can be sent again later.
        form.add_error(None, f"{capfirst(exc.message)}.")
    return None


def _waiting_in_flight(submit: Callable[[str], T], key: str) -> T:
    """submit(key), waiting out a concurrent request with the same key for its answer."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    while True:
        try:
            return submit(key)
        except IdempotencyKeyInFlight:
            if time.monotonic() > deadline:
                raise
            time.sleep(IN_FLIGHT_POLL_SECONDS)


# --- one job -------------------------------------------------------------------------------------


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: UUID) -> HttpResponse:
    return render(request, "jobs/detail.html", _detail_context(_owned_job(request, job_id)))


@login_required
@require_GET
def job_detail_live(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """The parts of a job's page that change while it runs, re-fetched at each status event."""
    return render(request, "jobs/detail_live.html", _detail_context(_owned_job(request, job_id)))


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: UUID) -> HttpResponse:
    job = _owned_job(request, job_id)
    try:
        submission.job_cancel(job=job)
    except JobAlreadyFinished:
        context = _detail_context(job)
        context["action_error"] = (
            f"This job has already {job.get_status_display().lower()}, so it cannot be canceled."
        )
        return render(request, "jobs/detail.html", context, status=409)
    messages.success(request, "Job canceled.")
    return redirect("job_detail", job_id=job.id)


@login_required
@require_POST
def job_rerun(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """A new job with this one's input and model; on a refusal the page says why."""
    job = _owned_job(request, job_id)
    try:
        rerun = submission.job_rerun(owner=request.user, job=job)
    except (JobNotFinished, InvalidInput, SubmissionRateLimited, BudgetExceeded) as exc:
        context = _detail_context(job)
        context["action_error"] = f"This job cannot be rerun now: {exc.message}."
        status = SERVICE_ERROR_STATUS.get(type(exc), 400)
        return render(request, "jobs/detail.html", context, status=status)
    messages.success(request, "Job rerun: this is the new one.")
    return redirect("job_detail", job_id=rerun.id)


def _owned_job(request: HttpRequest, job_id: UUID) -> Job:
    """The user's job; someone else's is as absent as one that never existed."""
    job = selectors.job_get(owner=request.user, job_id=job_id)
    if job is None:
        raise Http404("no such job")
    return job


def _detail_context(job: Job) -> dict[str, Any]:
    return {
        "job": job,
        "params": [(key, value) for key, value in job.input.items() if key != "text"],
        "calls": list(selectors.job_calls(job=job)),
        "deliveries": selectors.subject_deliveries(subject=job) if job.webhook else [],
        "live": not job.is_finished,
        # A kind may ship its own small templates; any other shows through the generic ones.
        "input_template": _kind_template(job.kind, "input"),
        "result_template": _kind_template(job.kind, "result"),
    }


def _kind_template(kind: str, part: str) -> list[str]:
    """Names for {% include %}, which takes the first that exists (as select_template does)."""
    return [f"jobs/kinds/{kind}_{part}.html", f"jobs/kinds/_{part}.html"]
