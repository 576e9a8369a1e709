"""The batch endpoints under /api/v1/batches: parse, call jobs.batches or a selector, present.

POST /batches takes a JSON body or a multipart upload, and reads neither through Django's
`request.body` (bounded by AIJOBS_MAX_BODY_BYTES, 1 MiB by default): a batch may be up to
AIJOBS_BATCH_MAX_BYTES, so the JSON body is read here with that bound, and the upload is
streamed from the file Django spooled it to, one item at a time.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import pydantic
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError, ValidationError
from pydantic import ConfigDict, create_model

from jobs import batches, selectors
from jobs.batch_files import BatchItem, read_items, results_csv, results_jsonl, too_large
from jobs.events import batch_topic
from jobs.models import Batch, BatchStatus, Mode, WebhookFilter
from jobs.models import Status as JobStatus
from jobs.presenters import batch_location, present_batch
from webapp import sse
from webapp.api import (
    ERRORS,
    REPLAYED,
    WEBHOOK_DOC,
    WEBHOOK_EVENTS_DOC,
    UsageOut,
    WebhookOut,
    event_stream_doc,
    idempotency_key,
    release_connection,
    respond,
)

router = Router(tags=["batches"])

# What a multipart body holds besides the file (boundaries, field headers, kind, params):
# allowed on top of AIJOBS_BATCH_MAX_BYTES before the upload is refused unread.
MULTIPART_ALLOWANCE = 1024 * 1024
RESULT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


# --- schemas ------------------------------------------------------------------------


class BatchItemIn(Schema):
    model_config = ConfigDict(extra="forbid")

    # Any: a malformed custom_id is reported per item, with the other items' problems.
    custom_id: Any = Field(default=None, description="^[A-Za-z0-9_-]{1,64}$; default: position")
    input: dict[str, Any] = Field(description="`text`, and any shared parameter to override")


class BatchCreate(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="The job kind of every item")
    model: str | None = Field(default=None, description="a Claude model; defaults per kind")
    mode: str = Field(default=Mode.STANDARD, description="standard (economy is not available yet)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the kind's input fields other than text, shared"
    )
    items: list[BatchItemIn]
    webhook: str | None = Field(default=None, description=WEBHOOK_DOC)
    webhook_events_filter: list[WebhookFilter] | None = Field(
        default=None, description=WEBHOOK_EVENTS_DOC
    )


BatchCounts = create_model(
    "BatchCounts", __base__=Schema, **dict.fromkeys(JobStatus.values, (int, ...))
)


class BatchOut(WebhookOut):
    id: UUID
    kind: str
    model: str
    mode: str
    status: BatchStatus
    params: dict[str, Any]
    counts: BatchCounts  # type: ignore[valid-type]
    total: int
    usage: UsageOut  # type: ignore[valid-type]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    results_url: str
    rerun_of: UUID | None


class BatchPage(Schema):
    items: list[BatchOut]
    next_cursor: str | None


class BatchFilters(Schema):
    status: BatchStatus | None = None
    limit: int = Field(default=20, ge=1, le=selectors.MAX_PAGE)
    cursor: str | None = None


class RerunQuery(Schema):
    status: JobStatus = Field(default=JobStatus.FAILED, description="a finished state")


class ResultsQuery(Schema):
    format: Literal["jsonl", "csv"] = "jsonl"


UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file", "kind"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "CSV or JSONL"},
        "kind": {"type": "string"},
        "params": {"type": "string", "description": "the shared params as JSON"},
        "text_column": {"type": "string", "default": "text"},
        "id_column": {"type": "string"},
        "format": {"type": "string", "enum": ["csv", "jsonl"], "description": "else by name"},
        "model": {"type": "string"},
        "mode": {"type": "string", "default": Mode.STANDARD},
        "webhook": {"type": "string", "description": WEBHOOK_DOC},
        "webhook_events_filter": {
            "type": "string",
            "description": "a comma list of start, completed (default: completed)",
        },
    },
}
CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BatchCreate.model_json_schema()},
            "multipart/form-data": {"schema": UPLOAD_SCHEMA},
        },
    }
}


# --- presentation -------------------------------------------------------------------


def _created(request: HttpRequest, batch: Batch, **headers: str) -> HttpResponse:
    return respond(request, present_batch(batch), 201, Location=batch_location(batch), **headers)


def _owned_batch(request: HttpRequest, batch_id: UUID) -> Batch:
    batch = selectors.batch_get(owner=request.auth, batch_id=batch_id)
    if batch is None:
        raise HttpError(404, "no such batch")
    return batch


# --- parsing the two bodies -----------------------------------------------------------


def _json_batch(request: HttpRequest) -> dict[str, Any]:
    limit = settings.AIJOBS_BATCH_MAX_BYTES
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large()
    try:
        payload = BatchCreate.model_validate_json(body)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if errors[0]["type"] == "json_invalid":
            # As for a job: a body that is not JSON is a bad request, not an invalid batch.
            raise HttpError(400, "the body is not JSON") from None
        raise ValidationError(errors) from None
    items = (
        BatchItem(number=number, custom_id=item.custom_id, input=item.input)
        for number, item in enumerate(payload.items, start=1)
    )
    return {**payload.model_dump(exclude={"items"}), "items": items}


def _upload_batch(request: HttpRequest) -> dict[str, Any]:
    upload = request.FILES.get("file")
    if upload is None:
        raise _invalid("file", "attach the CSV or JSONL file as the `file` field")
    form = request.POST
    items = read_items(
        upload,
        file_format=form.get("format") or _format_of(upload.name or ""),
        text_column=form.get("text_column") or "text",
        id_column=form.get("id_column") or None,
    )
    return {
        "kind": form.get("kind", ""),
        "model": form.get("model") or None,
        "mode": form.get("mode") or Mode.STANDARD,
        "params": _params(form.get("params")),
        "items": items,
        "webhook": form.get("webhook") or None,
        "webhook_events_filter": _events_filter(form.get("webhook_events_filter")),
    }


def _events_filter(raw: str | None) -> list[str] | None:
    """A comma list in a form field; the service checks its values."""
    if raw is None:
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]


def _format_of(name: str) -> str:
    return "jsonl" if name.lower().endswith((".jsonl", ".ndjson")) else "csv"


def _params(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _invalid("params", f"is not JSON: {exc.msg}") from None
    if not isinstance(params, dict):
        raise _invalid("params", "must be a JSON object")
    return params


def _invalid(field: str, msg: str) -> ValidationError:
    return ValidationError([{"loc": [field], "msg": msg, "type": "value_error"}])


# --- endpoints ----------------------------------------------------------------------


@router.post(
    "", response={201: BatchOut, **ERRORS}, summary="Submit a batch", openapi_extra=CREATE_BODY
)
def create_batch(request: HttpRequest) -> HttpResponse:
    """Every item is checked before anything is stored: one bad item and the batch is a 422
    listing the first 100 problems. With `Idempotency-Key`, a retry returns the first batch."""
    length = int(request.headers.get("Content-Length") or 0)
    if length > settings.AIJOBS_BATCH_MAX_BYTES + MULTIPART_ALLOWANCE:
        raise too_large()
    if request.content_type == "application/json":
        fields = _json_batch(request)
    elif request.content_type == "multipart/form-data":
        fields = _upload_batch(request)
    else:
        raise HttpError(415, "send application/json, or multipart/form-data with a file")
    key = idempotency_key(request)
    submitted = batches.batch_submit(owner=request.auth, idempotency_key=key, **fields)
    return _created(request, submitted.batch, **(REPLAYED if submitted.replayed else {}))


@router.get("", response={200: BatchPage, **ERRORS}, summary="List batches, newest first")
def list_batches(request: HttpRequest, filters: Query[BatchFilters]) -> dict[str, Any]:
    page = selectors.batch_list(owner=request.auth, **filters.model_dump())
    return {
        "items": [present_batch(batch) for batch in page.items],
        "next_cursor": page.next_cursor,
    }


@router.get("/{batch_id}", response={200: BatchOut, **ERRORS}, summary="Get a batch")
def get_batch(request: HttpRequest, batch_id: UUID) -> HttpResponse:
    # As GET /jobs/{id}: the presented JSON as is, so a batch's webhook body (the same
    # presenter) and its events carry are byte for byte what this returns.
    return respond(request, present_batch(_owned_batch(request, batch_id)), 200)


def _batch_json_released(owner: Any, batch_id: UUID) -> dict[str, Any] | None:
    """The batch as GET answers it, or None; the database connection given back after."""
    try:
        batch = selectors.batch_get(owner=owner, batch_id=batch_id)
        return None if batch is None else present_batch(batch)
    finally:
        release_connection()


@router.get(
    "/{batch_id}/events",
    response=ERRORS,
    summary="Follow a batch's progress (Server-Sent Events)",
    openapi_extra=event_stream_doc(
        "`status` and `done` carry the batch's JSON, `progress` `{counts, total, usage}`, "
        "at most two events a second"
    ),
)
async def batch_events(request: HttpRequest, batch_id: UUID) -> StreamingHttpResponse:
    """The batch's status changes, its counts and cost as its items run, and its end."""
    owner = request.auth
    after = await sse.resume_point(request, batch_topic(batch_id))

    def snapshot() -> Awaitable[dict[str, Any] | None]:
        return sync_to_async(_batch_json_released)(owner, batch_id)

    first = await snapshot()
    if first is None:
        raise HttpError(404, "no such batch")
    return sse.event_response(sse.batch_stream(batch_id, first, snapshot, after))


@router.post("/{batch_id}/cancel", response={200: BatchOut, **ERRORS}, summary="Cancel a batch")
def cancel_batch(request: HttpRequest, batch_id: UUID) -> dict[str, Any]:
    """Cancels every unfinished item; a finished or canceled batch is 409."""
    return present_batch(batches.batch_cancel(batch=_owned_batch(request, batch_id)))


@router.post(
    "/{batch_id}/rerun",
    response={201: BatchOut, **ERRORS},
    summary="Run a batch's failed (or other finished) items again",
)
def rerun_batch(request: HttpRequest, batch_id: UUID, query: Query[RerunQuery]) -> HttpResponse:
    """A new batch (`rerun_of`) of the items in `status`, keeping their custom_ids."""
    batch = _owned_batch(request, batch_id)
    return _created(
        request, batches.batch_rerun(owner=request.auth, batch=batch, status=query.status)
    )


@router.get("/{batch_id}/results", response=ERRORS, summary="A batch's results as JSONL or CSV")
def batch_results(
    request: HttpRequest, batch_id: UUID, query: Query[ResultsQuery]
) -> StreamingHttpResponse:
    """One line per item in submission order, streamed: custom_id, job_id, status, result,
    error_code, error_message, the four token counts, cost_usd. CSV spreads the result over
    columns (classify: the labels; extract: the schema's top-level fields)."""
    batch = _owned_batch(request, batch_id)
    rows = selectors.batch_result_rows(batch=batch)
    if query.format == "csv":
        lines = results_csv(batch.kind, batch.params, rows)
    else:
        lines = results_jsonl(rows)
    response = StreamingHttpResponse(lines, content_type=RESULT_TYPES[query.format])
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.id}.{query.format}"'
    return response
