"""What happens when an attempt fails, times out or loses its worker: retry or dead-letter.

Retries get exponential backoff with jitter (1 s, 2 s, 4 s ... capped at 60 s, each between half
and all of that), kept as a timer in our own sorted set and fired by the beat tick. The retry goes
through the whole dispatch pipeline again, policy check included. When retries run out the job
ends in the attempt's outcome (FAILED or TIMEOUT) and its DLQ entry says ``max_retries_exceeded``;
a permanent failure ends at once with the worker's own error code.
"""

from __future__ import annotations

import logging
import random
import time

from coretex.bus import DISPATCH_TASK, send_packet
from coretex.errors import IllegalTransitionError, NotFoundError
from coretex.model.job import JobRecord, JobState
from coretex.scheduler.dead_letter import end_with_dead_letter
from coretex.scheduler.packets import job_request_packet
from coretex.services import Services
from coretex.store.timers import DEADLINE, RETRY, Timer

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before the retry that follows ``attempt`` (1-based): full-ish jitter in [d/2, d]."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    jitter: float = (rng or random).random()
    return ceiling * (0.5 + 0.5 * jitter)


def fail_attempt(
    services: Services,
    job_id: str,
    attempt: int | None,
    *,
    code: str,
    message: str,
    retryable: bool,
    outcome: JobState = JobState.FAILED,
) -> JobState | None:
    """End ``attempt`` of ``job_id``: schedule a retry or finish the job. None if the attempt is stale."""
    try:
        record = services.jobs.get(job_id)
    except NotFoundError:
        return None
    attempt = record.attempts if attempt is None else attempt
    if attempt != record.attempts or record.terminal:
        return None
    services.timers.cancel(DEADLINE, job_id, attempt)
    services.leases.release(job_id, attempt)
    try:
        if retryable and attempt <= record.max_retries:
            return _retry_later(services, record, attempt, code, message)
        return _finish(services, record, attempt, code, message, retryable, outcome)
    except IllegalTransitionError as exc:  # another path ended this attempt first
        log.info("job %s attempt %s already settled: %s", job_id, attempt, exc)
        return None


def _retry_later(services: Services, record: JobRecord, attempt: int, code: str, message: str) -> JobState:
    delay = backoff_s(attempt)
    due = time.time() + delay
    services.jobs.transition(
        record.job_id, JobState.SCHEDULED, attempt=attempt,
        note=f"attempt {attempt} failed ({code}); retry in {delay:.1f}s",
        error_code=code, error_message=message, pending_reason=f"retry_backoff: attempt {attempt + 1} at {due:.3f}",
    )
    services.timers.schedule(Timer(RETRY, record.job_id, attempt, due))
    return JobState.SCHEDULED


def _finish(
    services: Services, record: JobRecord, attempt: int, code: str, message: str, retryable: bool, outcome: JobState
) -> JobState:
    exhausted = retryable and record.max_retries > 0
    # The DLQ's last_state is where the job stood when its last attempt ended (DISPATCHED or RUNNING).
    end_with_dead_letter(
        services, record, outcome, attempt=attempt, note=code, error_code=code, error_message=message,
        dlq_code="max_retries_exceeded" if exhausted else code,
        dlq_message=f"{code}: {message} (after {attempt} attempts)" if exhausted else message,
    )
    return outcome


def fire_retry(services: Services, timer: Timer) -> None:
    """A retry timer is due: send the job through the pipeline again (if still on that attempt)."""
    try:
        record = services.jobs.get(timer.job_id)
    except NotFoundError:
        return
    if record.state is not JobState.SCHEDULED or record.attempts != timer.attempt:
        return
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    send_packet(services.app, DISPATCH_TASK, packet, queue=services.settings.control_queue)


def fire_deadline(services: Services, timer: Timer) -> None:
    """An attempt's deadline passed with no result: TIMEOUT (then retry or dead-letter)."""
    try:
        record = services.jobs.get(timer.job_id)
    except NotFoundError:
        return
    if record.attempts == timer.attempt and record.state in (JobState.DISPATCHED, JobState.RUNNING):
        fail_attempt(services, record.job_id, timer.attempt, code="timeout", retryable=True, outcome=JobState.TIMEOUT,
                     message=f"attempt {timer.attempt} ran past its {record.timeout_s}s deadline")


def reap_lease(services: Services, job_id: str, attempt: int) -> None:
    """A running attempt's lease expired: its worker is gone (killed, host lost)."""
    try:
        record = services.jobs.get(job_id)
    except NotFoundError:
        return
    if record.attempts == attempt and record.state is JobState.RUNNING:
        fail_attempt(services, job_id, attempt, code="worker_lost", retryable=True,
                     message=f"worker {record.worker_id or '?'} stopped renewing the lease of attempt {attempt}")
