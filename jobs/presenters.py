"""Jobs and batches as JSON-ready values: what the API returns and what a webhook's body carries.

Both read them from here, so a job.completed webhook carries exactly the JSON that
GET /api/v1/jobs/{id} returns, and a batch's webhook what GET /api/v1/batches/{id} returns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs import selectors
from jobs.models import Batch, Job, ProviderCall, WebhookTarget
from jobs.usage import TOKEN_COUNTS


def timestamp(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC, as pydantic writes it, so every endpoint prints times alike."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def present_usage(row: Job | ProviderCall) -> dict[str, Any]:
    counts = {name: getattr(row, name) for name in TOKEN_COUNTS}
    return {**counts, "cost_usd": f"{row.cost_usd:.6f}"}


def present_error(code: str, message: str) -> dict[str, str] | None:
    return {"code": code, "message": message} if code else None


def present_webhook(target: WebhookTarget) -> dict[str, Any]:
    return {"webhook": target.webhook or None, "webhook_events_filter": list(target.webhook_events)}


def present_job(job: Job) -> dict[str, Any]:
    """The job as JSON-ready values, so a status poll need not go through pydantic."""
    return {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "model": job.model,
        "input": job.input,
        "result": job.result,
        "error": present_error(job.error_code, job.error_message),
        "attempts": job.attempts,
        "usage": present_usage(job),
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "next_retry_at": timestamp(job.next_retry_at),
        "rerun_of": str(job.rerun_of_id) if job.rerun_of_id else None,
        "batch_id": str(job.batch_id) if job.batch_id else None,
        "custom_id": job.custom_id if job.batch_id else None,
        **present_webhook(job),
    }


def batch_location(batch: Batch) -> str:
    return f"/api/v1/batches/{batch.id}"


def present_batch(batch: Batch) -> dict[str, Any]:
    progress = selectors.batch_progress(batch=batch)
    usage = {name: progress.usage[name] for name in TOKEN_COUNTS}
    return {
        "id": str(batch.id),
        "kind": batch.kind,
        "model": batch.model,
        "mode": batch.mode,
        "status": batch.status,
        "params": batch.params,
        "counts": progress.counts,
        "total": progress.total,
        "usage": {**usage, "cost_usd": f"{progress.usage['cost_usd']:.6f}"},
        "created_at": timestamp(batch.created_at),
        "started_at": timestamp(batch.started_at),
        "finished_at": timestamp(batch.finished_at),
        "results_url": f"{batch_location(batch)}/results",
        "rerun_of": str(batch.rerun_of_id) if batch.rerun_of_id else None,
        **present_webhook(batch),
    }
