"""Run one attempt of a job: claim, call Claude (with one repair round), record, finish.

No database transaction or row lock is held while Claude is called; every
write after the call names the attempt, so a worker whose lease was taken
over (or whose job was canceled) records its paid calls but changes nothing else.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError, connection
from pydantic import BaseModel

from jobs import attempts, events, kinds, limits, submission
from jobs.attempts import CallReport, ClaimOutcome
from jobs.errors import BudgetExceeded
from jobs.models import Job, Outcome, ProviderCall
from workers import claude, ratelimit
from workers.backoff import retry_delay
from workers.output import BATCHER, OutputStream
from workers.rounds import ROUNDS

log = logging.getLogger(__name__)

REPAIR_INSTRUCTION = (
    "Your previous answer did not match the required format. Problems found:\n{errors}\n"
    "Answer again with JSON that satisfies the schema, fixing these problems."
)
# A job whose owner is at their running limit waits about this long, spread by jitter.
BUSY_DELAY_SECONDS = 2.0
OUTPUT_MODEL_CACHE_SIZE = 1024
# A message of batch items begins no item after this long: the rest go back to the queue.
ITEMS_SECONDS = 0.5

_models: dict[tuple[str, str], type[BaseModel]] = {}


@dataclass(frozen=True)
class RunResult:
    """What the task must do next: nothing, or send the job again after `retry_in` seconds."""

    retry_in: float | None = None


class AttemptOver(Exception):
    """The attempt ended without an answer to validate; `result` is what the task does next."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result)
        self.result = result


@dataclass(frozen=True)
class Request:
    """One call's fixed parts, and what it is estimated to take from limits and budget."""

    kind: ModuleType
    output_model: type[BaseModel]
    messages: list[dict[str, Any]]
    estimated_input: int


def run_job(job_id: UUID | str, *, task_id: str = "") -> RunResult:
    claim = attempts.job_claim(job_id=job_id)
    job = claim.job
    if job is None:
        return _not_claimed(job_id, claim.outcome)
    log.info("job %s attempt %d claimed (%s, %s)", job.id, job.attempts, job.kind, job.model)
    if job.lost_leases > settings.AIJOBS_MAX_LOST_LEASES:
        message = f"its worker stopped {job.lost_leases} times while running it"
        attempts.job_fail(job_id=job.id, attempt=job.attempts, code="worker_lost", message=message)
        return RunResult()
    try:
        result = _attempt(job, task_id)
    except DatabaseError:
        # The database is away (a restart, a failover): the job keeps its lease,
        # which lapses, and the reaper sends it again once the database is back.
        log.exception("job %s attempt %d: database error, left to the reaper", job.id, job.attempts)
        raise
    except Exception:
        # A bug must end the job visibly rather than leave it running until its lease lapses.
        log.exception("job %s attempt %d crashed", job.id, job.attempts)
        attempts.job_fail(
            job_id=job.id,
            attempt=job.attempts,
            code="internal_error",
            message="the worker hit an internal error",
        )
        raise
    if job.batch_id is not None and result.retry_in is None:
        # The item is done with (or another attempt's now): its batch's window has room.
        ROUNDS.item_finished(job.batch_id)
    events.topics_pulse(events.job_topics(owner_id=job.owner_id, batch_id=job.batch_id))
    return result


def run_items(job_ids: Sequence[str], *, task_id: str = "") -> None:
    """One attempt of each of these batch items, in turn, as run_job runs one.

    Items not begun ITEMS_SECONDS after the first go back to the queue, a message each: fast
    items share the cost of one Celery message, and slow ones still get a worker slot each,
    having waited for one call at most. An item to try again goes back on its own, after its
    delay; after an item raised, the rest go back before the error is re-raised.
    """
    deadline = time.monotonic() + ITEMS_SECONDS
    for index, job_id in enumerate(job_ids):
        if index and time.monotonic() > deadline:
            submission.batch_items_send(job_ids[index:], per_message=1)
            return
        try:
            result = run_job(job_id, task_id=task_id)
        except Exception:
            submission.batch_items_send(job_ids[index + 1 :], per_message=1)
            raise
        if result.retry_in is not None:
            submission.batch_items_enqueue([job_id], countdown=result.retry_in)


def _not_claimed(job_id: UUID | str, outcome: ClaimOutcome) -> RunResult:
    if outcome is ClaimOutcome.OWNER_BUSY:
        return RunResult(retry_in=_spread(BUSY_DELAY_SECONDS))
    if outcome is ClaimOutcome.MISSING:
        # Messages are sent after the row's commit, so this is a deleted job,
        # or a bug that published too early; either way nothing can run.
        log.warning("job %s not found: skipped", job_id)
    else:
        log.info("job %s not claimable (%s): skipped", job_id, outcome.value)
    return RunResult()


def _attempt(job: Job, task_id: str) -> RunResult:
    kind = kinds.get_kind(job.kind)
    job_input = kind.Input.model_validate(job.input)
    prompt = kind.build_prompt(job_input)
    request = Request(
        kind=kind,
        output_model=_output_model(kind, job_input),
        messages=[{"role": "user", "content": prompt}],
        estimated_input=limits.input_tokens_estimate(system=kind.SYSTEM_PROMPT, prompt=prompt),
    )
    try:
        for seq in (0, 1):
            reply = _call(job, seq, request, task_id)
            if reply.output is not None:
                return RunResult()  # recorded together with the job's result
            request.messages.extend(
                [
                    {"role": "assistant", "content": reply.text},
                    {
                        "role": "user",
                        "content": REPAIR_INSTRUCTION.format(errors=reply.validation_errors),
                    },
                ]
            )
    except AttemptOver as over:
        return over.result
    attempts.job_fail(
        job_id=job.id,
        attempt=job.attempts,
        code="invalid_output",
        message=f"output still invalid after a repair round:\n{reply.validation_errors}",
    )
    return RunResult()


def _output_model(kind: ModuleType, job_input: BaseModel) -> type[BaseModel]:
    """The job's output model, shared by jobs with the same parameters.

    Building a Pydantic model (and its JSON schema) per job costs more CPU than
    the rest of the job; jobs differing only in their text share one.
    """
    params = job_input.model_dump(mode="json", by_alias=True, exclude={"text"})
    key = (kind.NAME, json.dumps(params, sort_keys=True))
    model = _models.get(key)
    if model is None:
        if len(_models) >= OUTPUT_MODEL_CACHE_SIZE:
            _models.clear()
        model = _models[key] = kind.output_model(job_input)
    return model


def _call(job: Job, seq: int, request: Request, task_id: str) -> claude.Reply:
    """One provider call within the fleet's rate limits and the owner's budget, always recorded.

    Raises AttemptOver when the attempt ends without an answer to validate.
    """
    max_tokens = request.kind.MAX_TOKENS
    wait = ratelimit.acquire(job.model, input_tokens=request.estimated_input, max_tokens=max_tokens)
    if wait > 0:
        raise AttemptOver(_wait_for_quota(job, seq, wait))
    call = _begin(job, seq, request, task_id)
    # Give the database connection back to the pool while we wait on the network:
    # hundreds of threads waiting on Claude must not hold hundreds of connections.
    if not connection.in_atomic_block:
        connection.close()
    try:
        reply = _ask(job, seq, request)
    except claude.ClaudeError as err:
        if not attempts.call_finish(call=call, report=_error_report(err)):
            raise _abandoned(job) from err
        if err.code == claude.CANCELED:
            log.info("job %s attempt %d: canceled while Claude wrote", job.id, job.attempts)
            raise AttemptOver(RunResult()) from err
        if err.status == 429 and err.retry_after:
            ratelimit.pause(job.model, err.retry_after)
        raise AttemptOver(_after_error(job, err)) from err
    result = request.kind.result_from(reply.output) if reply.output is not None else None
    if not attempts.call_finish(call=call, report=_reply_report(reply), result=result):
        raise _abandoned(job)
    ratelimit.settle(
        job.model,
        estimated_input=request.estimated_input,
        actual_input=reply.usage.input_tokens + reply.usage.cache_creation_input_tokens,
        max_tokens=max_tokens,
        actual_output=reply.usage.output_tokens,
    )
    return reply


def _ask(job: Job, seq: int, request: Request) -> claude.Reply:
    """The provider's answer, its text published as it is written when streaming is on.

    What is left of the text is published before the call is recorded, so a job's
    output events all come before its final status. A batch's items are not streamed: their
    answers are read by the thousand, once written, and a streamed call costs the worker
    20 to 40% more CPU than a plain one (PERFORMANCE.md, b).
    """
    output = None
    if settings.AIJOBS_STREAM_OUTPUT and job.batch_id is None:
        output = OutputStream(job.id, attempt=job.attempts, seq=seq, batcher=BATCHER)
    try:
        return claude.call(
            model=job.model,
            system=request.kind.SYSTEM_PROMPT,
            messages=request.messages,
            output_model=request.output_model,
            max_tokens=request.kind.MAX_TOKENS,
            on_text=output.write if output is not None else None,
        )
    finally:
        if output is not None:
            output.flush()


def _begin(job: Job, seq: int, request: Request, task_id: str) -> ProviderCall:
    """The pending call row; AttemptOver when the budget refused it (and the job has failed)."""
    max_tokens = request.kind.MAX_TOKENS
    worst_case = limits.reservation_usd(
        model=job.model, input_tokens=request.estimated_input, max_tokens=max_tokens
    )
    try:
        return attempts.call_begin(job=job, seq=seq, reserve_usd=worst_case, celery_task_id=task_id)
    except BudgetExceeded as exc:
        ratelimit.settle(job.model, estimated_input=request.estimated_input, actual_input=0,
                         max_tokens=max_tokens, actual_output=0)  # fmt: skip
        attempts.job_fail(job_id=job.id, attempt=job.attempts, code=exc.code, message=exc.message)
        raise AttemptOver(RunResult()) from exc


def _abandoned(job: Job) -> AttemptOver:
    """The reaper settled our pending call: we stalled past our lease, and the job is not ours."""
    log.warning(
        "job %s attempt %d: stalled past its lease; left to the next attempt", job.id, job.attempts
    )
    return AttemptOver(RunResult())


def _wait_for_quota(job: Job, seq: int, wait: float) -> RunResult:
    """Over the fleet's rate limit: come back when there is room, never sleeping in a slot."""
    delay = _spread(wait)
    if seq == 0:
        # Nothing was sent in this attempt, so it does not count as one.
        attempts.job_release(job_id=job.id, attempt=job.attempts)
        return RunResult(retry_in=delay)
    message = "waiting for the provider rate limit before the repair round"
    if attempts.job_schedule_retry(
        job_id=job.id, attempt=job.attempts, delay=delay, code="rate_limited", message=message
    ):
        return RunResult(retry_in=delay)
    return RunResult()


def _spread(seconds: float) -> float:
    """Jitter, so jobs told to wait the same time don't all come back at once.

    Capped at AIJOBS_RETRY_MAX_DELAY like every retry: a longer countdown would
    outlive the visibility timeout and be delivered again. A job told to wait
    longer simply comes back, finds it must still wait, and waits again.
    """
    seconds = min(seconds, settings.AIJOBS_RETRY_MAX_DELAY / 2)
    return seconds + random.uniform(0, seconds)


def _after_error(job: Job, err: claude.ClaudeError) -> RunResult:
    if not err.retryable:
        attempts.job_fail(job_id=job.id, attempt=job.attempts, code=err.code, message=err.message)
        return RunResult()
    if job.attempts >= settings.AIJOBS_MAX_ATTEMPTS:
        message = f"gave up after {job.attempts} attempts; last error: {err.message}"
        attempts.job_fail(job_id=job.id, attempt=job.attempts, code=err.code, message=message)
        return RunResult()
    delay = retry_delay(job.attempts, err.retry_after)
    if not attempts.job_schedule_retry(
        job_id=job.id, attempt=job.attempts, delay=delay, code=err.code, message=err.message
    ):
        return RunResult()
    log.info("job %s attempt %d: %s, retry in %.1fs", job.id, job.attempts, err.code, delay)
    return RunResult(retry_in=delay)


def _reply_report(reply: claude.Reply) -> CallReport:
    valid = reply.output is not None
    return CallReport(
        outcome=Outcome.OK if valid else Outcome.INVALID_OUTPUT,
        usage=reply.usage,
        provider_request_id=reply.request_id,
        stop_reason=reply.stop_reason,
        latency_ms=reply.latency_ms,
        http_status=200,
        error_code="" if valid else "invalid_output",
        error_message=reply.validation_errors,
    )


def _error_report(err: claude.ClaudeError) -> CallReport:
    return CallReport(
        outcome=Outcome.RETRYABLE_ERROR if err.retryable else Outcome.PERMANENT_ERROR,
        usage=err.usage,
        provider_request_id=err.request_id,
        latency_ms=err.latency_ms,
        http_status=err.status,
        error_code=err.code,
        error_message=err.message,
    )
