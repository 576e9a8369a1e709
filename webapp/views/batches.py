"""Batches: the list, the new-batch form and its preview, a batch's page, cancel, rerun, results.

The preview checks the first rows of a file on the server, by the same jobs.batches calls a
submission goes through, so no rule about items lives in the page's script: the script only
sends the start of the chosen file (PREVIEW_BYTES, cut at the end of a row) and shows the
fragment that comes back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import capfirst
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs import batch_files, batches, selectors
from jobs.batch_files import BatchFileError, BatchItem
from jobs.errors import InvalidInput, ServiceError
from jobs.models import Batch, BatchStatus, Mode
from webapp.forms import BatchForm, ItemProblem
from webapp.views.jobs import listed, submit_form

# The script sends at most this much of a file for its preview: enough for many rows, small
# enough to check at once. The estimate for a longer file is scaled from it by size.
PREVIEW_BYTES = 256 * 1024
# Rows shown in the preview table; problems further into the sent part are listed below it.
PREVIEW_ROWS = 10
UNFINISHED = (BatchStatus.QUEUED, BatchStatus.RUNNING)
RESULT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


# --- list ----------------------------------------------------------------------------------------


@login_required
@require_GET
def batch_list(request: HttpRequest) -> HttpResponse:
    return render(request, "batches/list.html", _list_context(request))


@login_required
@require_GET
def batch_list_live(request: HttpRequest) -> HttpResponse:
    """The list's table alone, re-fetched when the user's jobs change while a batch on the page
    is unfinished (job_list_events)."""
    return render(request, "batches/list_live.html", _list_context(request))


def _list_context(request: HttpRequest) -> dict[str, Any]:
    filters = {"cursor": request.GET.get("cursor") or None}
    page = listed(selectors.batch_list, owner=request.user, filters=filters)
    rows = [(batch, selectors.batch_progress(batch=batch)) for batch in page.items]
    return {
        "page": page,
        "rows": rows,
        "first_page": filters["cursor"] is None,
        "live": any(batch.status in UNFINISHED for batch in page.items),
    }


# --- submit --------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def batch_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = BatchForm.blank(kind=request.GET.get("kind"))
    else:
        form = BatchForm(request.POST, request.FILES)
        batch = _submit(request.user, form) if form.is_valid() else None
        if batch is not None:
            return redirect("batch_detail", batch_id=batch.id)
    groups = form.kind_groups()
    context = {
        "form": form,
        "kind_groups": groups,
        "kind_examples": {group.name: group.examples for group in groups},
        "preview_bytes": PREVIEW_BYTES,
    }
    return render(request, "batches/new.html", context)


def _submit(owner: AbstractBaseUser, form: BatchForm) -> Batch | None:
    """The batch this form makes (or made already), or None with the errors added to the form."""
    upload = form.cleaned_data["file"]

    def submit(key: str) -> Batch:
        # Read from the start each time: a submit waiting out a concurrent one runs again.
        upload.seek(0)
        return batches.batch_submit(
            owner=owner,
            kind=form.cleaned_data["kind"],
            model=form.job_model(),
            mode=Mode.STANDARD,
            params=form.kind_params(),
            items=batch_files.read_items(upload, **form.read_options()),
            idempotency_key=key,
        ).batch

    try:
        return submit_form(form, submit, noun="batch")
    except BatchFileError as exc:
        form.add_error("file", exc.message)
        return None


# --- preview -------------------------------------------------------------------------------------


@dataclass
class PreviewRow:
    item: BatchItem
    problems: list[ItemProblem] = field(default_factory=list)


@dataclass
class Preview:
    """What the new-batch page shows of a file before it is submitted."""

    rows: list[PreviewRow] = field(default_factory=list)
    items_read: int = 0
    # Problems of the items read past the rows shown.
    more_problems: list[ItemProblem] = field(default_factory=list)
    file_error: str | None = None
    estimate_usd: Decimal | None = None
    estimated_items: int = 0
    # Only the start of the file was sent: the item count and the cost are scaled estimates.
    partial: bool = False


@login_required
@require_POST
def batch_preview(request: HttpRequest) -> HttpResponse:
    """The start of a file checked as a submission would check it: a fragment for the form."""
    form = BatchForm(request.POST, request.FILES)
    preview = _preview(form, request.POST.get("file_size")) if form.is_valid() else None
    return render(request, "batches/_preview.html", {"form": form, "preview": preview})


def _preview(form: BatchForm, file_size: str | None) -> Preview:
    upload = form.cleaned_data["file"]
    if upload.size > PREVIEW_BYTES:
        return Preview(file_error=f"A preview reads at most {PREVIEW_BYTES // 1024} KiB.")
    items, file_error = _read_start(upload, form.read_options())
    preview = Preview(items_read=len(items), file_error=file_error)
    _check(form, items, preview)
    by_item: dict[int, list[ItemProblem]] = defaultdict(list)
    for problem in form.item_problems:
        by_item[problem.item].append(problem)
    preview.rows = [PreviewRow(item, by_item.pop(item.number, [])) for item in items[:PREVIEW_ROWS]]
    preview.more_problems = [problem for problems in by_item.values() for problem in problems]
    total_size = max(upload.size, _int_or_zero(file_size))
    preview.partial = total_size > upload.size
    if preview.estimate_usd is not None and upload.size:
        scale = Decimal(total_size) / Decimal(upload.size)
        preview.estimate_usd *= scale
        preview.estimated_items = round(len(items) * scale)
    return preview


def _read_start(upload: Any, options: dict[str, Any]) -> tuple[list[BatchItem], str | None]:
    """The items of the sent part of a file, and the problem that stopped reading, if any."""
    items: list[BatchItem] = []
    try:
        for item in batch_files.read_items(upload, **options):
            items.append(item)
    except BatchFileError as exc:
        return items, exc.message
    return items, None


def _check(form: BatchForm, items: list[BatchItem], preview: Preview) -> None:
    """Validate the items as batch_submit would: problems go on the form, the estimate on the
    preview."""
    if not items:
        return
    try:
        valid = batches.batch_validate(
            kind=form.cleaned_data["kind"],
            model=form.job_model(),
            mode=Mode.STANDARD,
            params=form.kind_params(),
            items=items,
        )
    except InvalidInput as exc:
        form.add_service_errors(exc.details)
    except BatchFileError as exc:
        preview.file_error = exc.message
    else:
        preview.estimate_usd = batches.batch_estimate_usd(valid)


def _int_or_zero(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


# --- one batch -----------------------------------------------------------------------------------


@login_required
@require_GET
def batch_detail(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    batch = _owned_batch(request, batch_id)
    return render(request, "batches/detail.html", _detail_context(batch))


@login_required
@require_GET
def batch_detail_live(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    """The parts of a batch's page that change while it runs, re-fetched at each event of its
    stream (GET /api/v1/batches/{id}/events) until it ends."""
    batch = _owned_batch(request, batch_id)
    return render(request, "batches/detail_live.html", _detail_context(batch))


@login_required
@require_POST
def batch_cancel(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    batch = _owned_batch(request, batch_id)
    try:
        batches.batch_cancel(batch=batch)
    except ServiceError as exc:
        context = _detail_context(batch)
        context["action_error"] = f"{capfirst(exc.message)}."
        return render(request, "batches/detail.html", context, status=409)
    messages.success(request, "Batch canceled: its unfinished items will not run.")
    return redirect("batch_detail", batch_id=batch.id)


@login_required
@require_POST
def batch_rerun(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    """A new batch of this one's failed items, with the same kind, model and parameters."""
    batch = _owned_batch(request, batch_id)
    try:
        rerun = batches.batch_rerun(owner=request.user, batch=batch, status="failed")
    except ServiceError as exc:
        messages.error(request, f"{capfirst(exc.message)}.")
        return redirect("batch_detail", batch_id=batch.id)
    messages.success(request, f"A new batch reruns the {rerun.total:,} failed items.")
    return redirect("batch_detail", batch_id=rerun.id)


@login_required
@require_GET
def batch_results(request: HttpRequest, batch_id: UUID, file_format: str) -> HttpResponse:
    """Every item's outcome in submission order, streamed as it is read."""
    batch = _owned_batch(request, batch_id)
    if file_format not in RESULT_TYPES:
        raise Http404("no such format")
    rows = selectors.batch_result_rows(batch=batch)
    if file_format == "csv":
        lines = batch_files.results_csv(batch.kind, batch.params, rows)
    else:
        lines = batch_files.results_jsonl(rows)
    response = StreamingHttpResponse(lines, content_type=RESULT_TYPES[file_format])
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.id}.{file_format}"'
    return response


def _owned_batch(request: HttpRequest, batch_id: UUID) -> Batch:
    """The user's batch; someone else's is as absent as one that never existed."""
    batch = selectors.batch_get(owner=request.user, batch_id=batch_id)
    if batch is None:
        raise Http404("no such batch")
    return batch


def _detail_context(batch: Batch) -> dict[str, Any]:
    progress = selectors.batch_progress(batch=batch)
    live = batch.status in UNFINISHED
    return {
        "batch": batch,
        "progress": progress,
        "params": list(batch.params.items()),
        "deliveries": selectors.subject_deliveries(subject=batch) if batch.webhook else [],
        "live": live,
        "time_left_ms": _time_left_ms(batch, progress.finished) if live else None,
    }


def _time_left_ms(batch: Batch, finished: int) -> float | None:
    """At the pace so far: the time since the first item started over the items finished."""
    if batch.started_at is None or finished == 0:
        return None
    elapsed = (timezone.now() - batch.started_at).total_seconds()
    return elapsed / finished * (batch.total - finished) * 1000
