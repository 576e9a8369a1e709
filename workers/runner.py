"""Run one attempt of a job: claim, call Claude (with one repair round), record, finish.

No database transaction or row lock is held while Claude is called; every
write after the call names the attempt, so a worker whose lease was taken
over (or whose job was canceled) records its paid calls but changes nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings

from jobs import kinds, services
from jobs.models import Job, Outcome
from jobs.services import CallReport
from workers import claude
from workers.backoff import retry_delay

log = logging.getLogger(__name__)

REPAIR_INSTRUCTION = (
    "Your previous answer did not match the required format. Problems found:\n{errors}\n"
    "Answer again with JSON that satisfies the schema, fixing these problems."
)


@dataclass(frozen=True)
class RunResult:
    """What the task must do next: nothing, or send the job again after `retry_in` seconds."""

    retry_in: float | None = None


def run_job(job_id: UUID | str, *, task_id: str = "") -> RunResult:
    job = services.job_claim(job_id=job_id)
    if job is None:
        log.info("job %s not claimable (finished, canceled or held): skipped", job_id)
        return RunResult()
    log.info("job %s attempt %d claimed (%s, %s)", job.id, job.attempts, job.kind, job.model)
    try:
        return _attempt(job, task_id)
    except Exception:
        # A bug must end the job visibly rather than leave it running until its lease lapses.
        log.exception("job %s attempt %d crashed", job.id, job.attempts)
        services.job_fail(
            job_id=job.id,
            attempt=job.attempts,
            code="internal_error",
            message="the worker hit an internal error",
        )
        raise


def _attempt(job: Job, task_id: str) -> RunResult:
    kind = kinds.get_kind(job.kind)
    job_input = kind.Input.model_validate(job.input)
    output_model = kind.output_model(job_input)
    messages: list[dict[str, Any]] = [{"role": "user", "content": kind.build_prompt(job_input)}]
    for seq in (0, 1):
        try:
            reply = claude.call(
                model=job.model,
                system=kind.SYSTEM_PROMPT,
                messages=messages,
                output_model=output_model,
                max_tokens=kind.MAX_TOKENS,
            )
        except claude.ClaudeError as err:
            _record_error(job, seq, err, task_id)
            return _after_error(job, err)
        _record_reply(job, seq, reply, task_id)
        if reply.output is not None:
            services.job_succeed(
                job_id=job.id, attempt=job.attempts, result=kind.result_from(reply.output)
            )
            return RunResult()
        messages += [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": REPAIR_INSTRUCTION.format(errors=reply.validation_errors)},
        ]
    services.job_fail(
        job_id=job.id,
        attempt=job.attempts,
        code="invalid_output",
        message=f"output still invalid after a repair round:\n{reply.validation_errors}",
    )
    return RunResult()


def _after_error(job: Job, err: claude.ClaudeError) -> RunResult:
    if not err.retryable:
        services.job_fail(job_id=job.id, attempt=job.attempts, code=err.code, message=err.message)
        return RunResult()
    if job.attempts >= settings.AIJOBS_MAX_ATTEMPTS:
        message = f"gave up after {job.attempts} attempts; last error: {err.message}"
        services.job_fail(job_id=job.id, attempt=job.attempts, code=err.code, message=message)
        return RunResult()
    delay = retry_delay(job.attempts, err.retry_after)
    if not services.job_schedule_retry(
        job_id=job.id, attempt=job.attempts, delay=delay, code=err.code, message=err.message
    ):
        return RunResult()
    log.info("job %s attempt %d: %s, retry in %.1fs", job.id, job.attempts, err.code, delay)
    return RunResult(retry_in=delay)


def _record_reply(job: Job, seq: int, reply: claude.Reply, task_id: str) -> None:
    valid = reply.output is not None
    services.call_record(
        job_id=job.id,
        report=CallReport(
            attempt=job.attempts,
            seq=seq,
            model=job.model,
            outcome=Outcome.OK if valid else Outcome.INVALID_OUTPUT,
            usage=reply.usage,
            provider_request_id=reply.request_id,
            stop_reason=reply.stop_reason,
            latency_ms=reply.latency_ms,
            http_status=200,
            error_code="" if valid else "invalid_output",
            error_message=reply.validation_errors,
            celery_task_id=task_id,
        ),
    )


def _record_error(job: Job, seq: int, err: claude.ClaudeError, task_id: str) -> None:
    services.call_record(
        job_id=job.id,
        report=CallReport(
            attempt=job.attempts,
            seq=seq,
            model=job.model,
            outcome=Outcome.RETRYABLE_ERROR if err.retryable else Outcome.PERMANENT_ERROR,
            provider_request_id=err.request_id,
            latency_ms=err.latency_ms,
            http_status=err.status,
            error_code=err.code,
            error_message=err.message,
            celery_task_id=task_id,
        ),
    )
