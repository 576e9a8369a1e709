"""The JSON API under /api/v1: parse, call a service or selector, present."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from functools import wraps
from typing import Annotated, Any, Literal
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, NinjaAPI, Query, Schema, Status, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth
from pydantic import AfterValidator, ConfigDict, create_model

from jobs import kinds, selectors, submission
from jobs.batch_files import BatchFileError
from jobs.errors import (
    BatchAlreadyFinished,
    BudgetExceeded,
    DeliveryPending,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidInput,
    JobAlreadyFinished,
    JobNotFinished,
    ServiceError,
    SubmissionRateLimited,
)
from jobs.health import system_health
from jobs.models import FINISHED, Job, Mode, ProviderCall, WebhookFilter
from jobs.models import Status as JobStatus
from jobs.presenters import present_error, present_job, present_usage
from jobs.tokens import api_token_authenticate
from jobs.usage import TOKEN_COUNTS
from webapp import sse

MAX_WAIT_SECONDS = 60
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# The header that tells a retried request from the first (headers named as _job_response takes).
REPLAYED = {"Idempotent_Replayed": "true"}
SERVICE_ERROR_STATUS = {
    InvalidInput: 422,
    IdempotencyKeyReused: 422,
    IdempotencyKeyInFlight: 409,
    JobAlreadyFinished: 409,
    BatchAlreadyFinished: 409,
    DeliveryPending: 409,
    JobNotFinished: 409,
    BudgetExceeded: 402,
    SubmissionRateLimited: 429,
}


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return api_token_authenticate(token)


def signed_in(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The schema and docs pages, for a logged-in user or a valid token.

    Without either, a browser (it asks for HTML) goes to the login page; a program gets the
    API's own 401, as from every other endpoint.
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated or BearerToken()(request) is not None:
            return view(request, *args, **kwargs)
        if "text/html" in request.headers.get("Accept", ""):
            return redirect_to_login(request.get_full_path())
        return on_unauthenticated(request, AuthenticationError())

    return guarded


class DocsPage(Swagger):
    """ninja's Swagger UI, in a page that also says when results are simulated."""

    template = "api/docs.html"


api = NinjaAPI(
    title="aijobs",
    version="1",
    description=(
        "Summarize, classify and extract jobs run on Claude; submit, then wait, poll or follow "
        "the job's events."
    ),
    auth=[BearerToken(), SessionAuth()],
    docs=DocsPage(),
    docs_decorator=signed_in,
    urls_namespace="api",
)


# --- schemas ------------------------------------------------------------------------


def _known_kind(kind: str | None) -> str | None:
    """Kinds are registered at run time (AIJOBS_KIND_MODULES), so they are checked, not typed."""
    if kind is not None and kind not in kinds.KINDS:
        raise ValueError(f"must be one of {', '.join(kinds.names())}")
    return kind


KindName = Annotated[str, AfterValidator(_known_kind)]


WEBHOOK_DOC = (
    "an https URL to POST the job's events to, signed per Standard Webhooks "
    "(http only to hosts in AIJOBS_WEBHOOK_ALLOWED_HOSTS)"
)
WEBHOOK_EVENTS_DOC = "the events sent: start, completed (default: completed)"


class WebhookOut(Schema):
    webhook: str | None = Field(description="where the events go; null for none")
    webhook_events_filter: list[WebhookFilter] = Field(description="the events sent")


class JobCreate(Schema):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="The job kind (summarize, classify, extract, or one of yours)")
    input: dict[str, Any] = Field(description="the kind's input; see the job kinds in the README")
    model: str | None = Field(default=None, description="a Claude model; defaults per kind")
    mode: Mode = Field(
        default=Mode.STANDARD,
        description="standard; economy (Message Batches) is not available yet",
    )
    webhook: str | None = Field(default=None, description=WEBHOOK_DOC)
    webhook_events_filter: list[WebhookFilter] | None = Field(
        default=None, description=WEBHOOK_EVENTS_DOC
    )


UsageOut = create_model(
    "UsageOut",
    __base__=Schema,
    __doc__="Token counts as the provider reported them, and their cost in USD.",
    **dict.fromkeys(TOKEN_COUNTS, (int, ...)),
    cost_usd=(str, Field(description="USD as a decimal string")),
)


class JobError(Schema):
    code: str
    message: str


class JobOut(WebhookOut):
    id: UUID
    kind: str
    status: JobStatus
    model: str
    input: dict[str, Any]
    result: dict[str, Any] | None
    error: JobError | None
    attempts: int
    usage: UsageOut
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_retry_at: datetime | None
    rerun_of: UUID | None = Field(description="the job this one runs again, if it is a rerun")
    batch_id: UUID | None = Field(description="the batch this job is an item of, if any")
    custom_id: str | None = Field(description="the item's id in its batch")


class JobPage(Schema):
    items: list[JobOut]
    next_cursor: str | None


class CallOut(UsageOut):
    attempt: int
    seq: int
    outcome: str
    error: JobError | None
    http_status: int | None
    model: str
    stop_reason: str
    latency_ms: int
    provider_request_id: str
    created_at: datetime


class UsageGroup(UsageOut):
    key: str
    calls: int


class UsageTotals(UsageOut):
    calls: int


class UsageReport(Schema):
    start: date | None = Field(alias="from")
    end: date | None = Field(alias="to")
    group_by: str | None
    totals: UsageTotals
    groups: list[UsageGroup]


class ErrorBody(Schema):
    code: str
    message: str
    details: Any = None


class ErrorOut(Schema):
    error: ErrorBody


class Health(Schema):
    ok: bool
    database: bool
    broker: bool
    workers: list[str]
    jobs_stalled: bool = Field(description="jobs are waiting and none was claimed for a while")


class JobFilters(Schema):
    status: JobStatus | None = None
    kind: KindName | None = None
    batch: UUID | None = Field(default=None, description="only the items of this batch")
    limit: int = Field(default=20, ge=1, le=selectors.MAX_PAGE)
    cursor: str | None = None


class UsageQuery(Schema):
    start: date | None = Field(default=None, alias="from")
    end: date | None = Field(default=None, alias="to")
    group_by: Literal["day", "kind", "model"] | None = None


# --- presentation -------------------------------------------------------------------


def present_call(call: ProviderCall) -> dict[str, Any]:
    return {
        **present_usage(call),
        "attempt": call.attempt,
        "seq": call.seq,
        "outcome": call.outcome,
        "error": present_error(call.error_code, call.error_message),
        "http_status": call.http_status,
        "model": call.model,
        "stop_reason": call.stop_reason,
        "latency_ms": call.latency_ms,
        "provider_request_id": call.provider_request_id,
        "created_at": call.created_at,
    }


def _job_response(
    request: HttpRequest, job: dict[str, Any], status: int, **headers: str
) -> HttpResponse:
    return respond(request, job, status, **headers)


def respond(request: HttpRequest, body: Any, status: int, **headers: str) -> HttpResponse:
    """`body` as JSON with `headers` (Idempotent_Replayed is sent as Idempotent-Replayed)."""
    response = api.create_response(request, body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise HttpError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def _location(job: dict[str, Any]) -> str:
    return f"/api/v1/jobs/{job['id']}"


def _requested_wait(request: HttpRequest) -> int | None:
    match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), MAX_WAIT_SECONDS) if match else None


def release_connection() -> None:
    """Give the request's database connection back to the pool now, not at the response's end.

    Django keeps it in the request's thread until then, so an async view that waits (a long
    poll, an event stream) would hold one for its whole wait. Inside a transaction (a test
    run through Django's test client) there is nothing to give back.
    """
    if not connection.in_atomic_block:
        connection.close()


def _job_json_released(owner: Any, job_id: UUID | str) -> dict[str, Any] | None:
    try:
        job = selectors.job_get(owner=owner, job_id=UUID(str(job_id)))
        return None if job is None else present_job(job)
    finally:
        release_connection()


async def _owned_job_json(owner: Any, job_id: UUID | str) -> dict[str, Any]:
    job = await sync_to_async(_job_json_released)(owner, job_id)
    if job is None:
        raise HttpError(404, "no such job")
    return job


async def _maybe_wait(
    request: HttpRequest, job: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """`Prefer: wait=N`: the job once it finishes or N seconds pass, waited for on its events."""
    seconds = _requested_wait(request)
    if seconds is None:
        return job, {}
    if job["status"] not in FINISHED:
        await selectors.job_wait_finished(job_id=job["id"], seconds=seconds)
        job = await _owned_job_json(request.auth, job["id"])
    return job, {"Preference_Applied": f"wait={seconds}"}


def _owned_job(request: HttpRequest, job_id: UUID) -> Job:
    job = selectors.job_get(owner=request.auth, job_id=job_id)
    if job is None:
        raise HttpError(404, "no such job")
    return job


# --- endpoints ----------------------------------------------------------------------

ERRORS = dict.fromkeys((400, 401, 402, 404, 409, 413, 415, 422, 429), ErrorOut)


@api.post("/jobs", response={201: JobOut, **ERRORS}, summary="Submit a job")
async def create_job(request: HttpRequest, payload: JobCreate) -> HttpResponse:
    """Store the job and queue it; with `Idempotency-Key`, a retry returns the first job.

    `Prefer: wait=N` holds the answer until the job finishes or N (<= 60) seconds pass."""
    if request.content_type != "application/json":
        raise HttpError(415, "send the body as application/json")
    key = idempotency_key(request)
    job, replayed = await sync_to_async(_submit_released)(request.auth, payload, key)
    job, headers = await _maybe_wait(request, job)
    if replayed:
        headers |= REPLAYED
    return _job_response(request, job, 201, Location=_location(job), **headers)


def _submit_released(
    owner: Any, payload: JobCreate, key: str | None
) -> tuple[dict[str, Any], bool]:
    try:
        submitted = submission.job_submit(
            owner=owner,
            kind=payload.kind,
            input=payload.input,
            model=payload.model,
            mode=payload.mode,
            idempotency_key=key,
            webhook=payload.webhook,
            webhook_events_filter=payload.webhook_events_filter,
        )
        return present_job(submitted.job), submitted.replayed
    finally:
        release_connection()


@api.get("/jobs", response={200: JobPage, **ERRORS}, summary="List jobs, newest first")
def list_jobs(request: HttpRequest, filters: Query[JobFilters]) -> dict[str, Any]:
    page = selectors.job_list(owner=request.auth, **filters.model_dump())
    return {"items": [present_job(job) for job in page.items], "next_cursor": page.next_cursor}


@api.get("/jobs/{job_id}", response={200: JobOut, **ERRORS}, summary="Get a job")
async def get_job(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """`Prefer: wait=N` holds the answer until the job finishes or N (<= 60) seconds pass."""
    job, headers = await _maybe_wait(request, await _owned_job_json(request.auth, job_id))
    return _job_response(request, job, 200, **headers)


def event_stream_doc(events: str) -> dict[str, Any]:
    """The OpenAPI answer of an event stream whose events `events` describes."""
    description = (
        f"text/event-stream: {events}; each event has an `id:` to resume after with `Last-Event-ID`"
    )
    content = {"text/event-stream": {"schema": {"type": "string"}}}
    return {"responses": {200: {"description": description, "content": content}}}


EVENT_STREAM_DOC = event_stream_doc(
    "`status` and `done` carry the job's JSON, `output` `{text, partial}`"
)


@api.get(
    "/jobs/{job_id}/events",
    response=ERRORS,
    summary="Follow a job's events (Server-Sent Events)",
    openapi_extra=EVENT_STREAM_DOC,
)
async def job_events(request: HttpRequest, job_id: UUID) -> StreamingHttpResponse:
    """The job's status changes, its output as the model writes it, and its end."""
    owner = request.auth
    first = await _owned_job_json(owner, job_id)
    stream = sse.job_stream(
        job_id,
        first,
        lambda: sync_to_async(_job_json_released)(owner, job_id),
        sse.resume_after(request),
    )
    return sse.event_response(stream)


@api.get(
    "/jobs/{job_id}/calls",
    response={200: list[CallOut], **ERRORS},
    summary="A job's provider calls",
)
def job_calls(request: HttpRequest, job_id: UUID) -> list[dict[str, Any]]:
    return [present_call(call) for call in selectors.job_calls(job=_owned_job(request, job_id))]


@api.post("/jobs/{job_id}/cancel", response={200: JobOut, **ERRORS}, summary="Cancel a job")
def cancel_job(request: HttpRequest, job_id: UUID) -> dict[str, Any]:
    return present_job(submission.job_cancel(job=_owned_job(request, job_id)))


@api.post(
    "/jobs/{job_id}/rerun", response={201: JobOut, **ERRORS}, summary="Run a finished job again"
)
def rerun_job(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """A new job with the same kind, input and model and `rerun_of` set to this one, through
    the same validation, limits and budget as a submission; an unfinished job is 409."""
    job = present_job(submission.job_rerun(owner=request.auth, job=_owned_job(request, job_id)))
    return _job_response(request, job, 201, Location=_location(job))


@api.get("/usage", response={200: UsageReport, **ERRORS}, summary="Token and cost totals")
def usage(request: HttpRequest, query: Query[UsageQuery]) -> dict[str, Any]:
    report = selectors.usage_totals(
        owner=request.auth, start=query.start, end=query.end, group_by=query.group_by
    )
    totals = {**report["totals"], "cost_usd": f"{report['totals']['cost_usd']:.6f}"}
    groups = [{**group, "cost_usd": f"{group['cost_usd']:.6f}"} for group in report["groups"]]
    return {
        "from": query.start,
        "to": query.end,
        "group_by": query.group_by,
        "totals": totals,
        "groups": groups,
    }


@api.get(
    "/health", auth=None, response={200: Health, 503: Health}, summary="Database, broker, workers"
)
def health(request: HttpRequest) -> Status[dict[str, Any]]:
    report = system_health()
    return Status(200 if report["ok"] else 503, report)


# --- errors as {"error": {code, message, details}} -----------------------------------


def _error_response(
    request: HttpRequest, status: int, code: str, message: str, details: Any = None
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return api.create_response(request, body, status=status)


@api.exception_handler(ServiceError)
def on_service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    status = SERVICE_ERROR_STATUS.get(type(exc), 400)
    response = _error_response(request, status, exc.code, exc.message, exc.details)
    if isinstance(exc, SubmissionRateLimited):
        response["Retry-After"] = str(math.ceil(exc.retry_after))
    return response


def _body_relative(loc: list[Any]) -> list[Any]:
    """Body fields named as in the body (`input.text`), like the services' own errors."""
    parts = list(loc)
    if parts[:1] == ["body"]:
        parts = [part for part in parts[1:] if part != "payload"]
    return parts


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # A path that names no job or batch (a malformed id) is a missing one, not a bad request.
    for error in exc.errors:
        if tuple(error["loc"][:1]) == ("path",):
            noun = str(error["loc"][-1]).removesuffix("_id")
            return on_http_error(request, HttpError(404, f"no such {noun}"))
    details = [
        {"loc": _body_relative(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors
    ]
    return _error_response(request, 422, "invalid_request", "the request is invalid", details)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error_response(
        request, 401, "unauthenticated", "send a valid API token as 'Authorization: Bearer ...'"
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    409: "conflict",
    415: "unsupported_media_type",
}


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    code = HTTP_ERROR_CODES.get(exc.status_code, "error")
    return _error_response(request, exc.status_code, code, exc.message)


@api.exception_handler(BatchFileError)
def on_batch_file_error(request: HttpRequest, exc: BatchFileError) -> HttpResponse:
    return _error_response(request, exc.status, exc.code, exc.message)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error_response(request, 413, "request_too_large", "the request body is too large")


api.add_router("/batches", "webapp.batch_api.router")
api.add_router("/webhooks", "webapp.webhook_api.router")
