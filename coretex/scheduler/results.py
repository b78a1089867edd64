"""Apply a worker's ``JobResult`` to the job record exactly once.

Coretex workers apply their own SUCCEEDED results (write-through, attempt-guarded), so a client
sees success without a trip through the control queue, and a workflow run waiting on the job
hears of it from the job news the same move writes. Results of other CAP producers, and every
failure (which needs the retry decision), are applied here.

The result belongs to one attempt: a result of an attempt the job already moved on from (it was
retried after a timeout, say) is ignored. Success ends the job; a failure or timeout goes to
:func:`fail_attempt`, which retries it or dead-letters it. The lifecycle check in the store makes
all of it idempotent: a repeated result changes nothing.
"""

from __future__ import annotations

import logging

from coretex.agent.v1 import job_pb2
from coretex.errors import IllegalTransitionError, NotFoundError
from coretex.model.job import JobState
from coretex.scheduler.packets import state_of
from coretex.scheduler.retries import fail_attempt
from coretex.services import Services
from coretex.store._redis import Pipeline
from coretex.store.timers import DEADLINE

log = logging.getLogger(__name__)


def apply_result(services: Services, result: job_pb2.JobResult, attempt: int | None = None,
                 retryable: bool = True) -> bool:
    """Record ``result`` of ``attempt`` (None: the current one); return True if it changed the job."""
    target = state_of(result.status)
    if target is None or target is JobState.RUNNING:
        log.warning("job %s: ignoring result with status %s", result.job_id, result.status)
        return False
    if target is JobState.SUCCEEDED:
        if attempt is None:  # another CAP producer's result: it is the current attempt's
            try:
                attempt = services.jobs.get(result.job_id).attempts
            except NotFoundError:
                log.warning("job %s: result for an unknown job not applied", result.job_id)
                return False
        return record_success(services, result, attempt)
    if target is JobState.CANCELLED:
        return _settle(services, result, attempt, JobState.CANCELLED)
    outcome = fail_attempt(
        services, result.job_id, attempt, code=result.error_code or "worker_failed",
        message=result.error_message, retryable=retryable, outcome=target,
    )
    return outcome is not None


def record_success(services: Services, result: job_pb2.JobResult, attempt: int,
                   along: Pipeline | None = None) -> bool:
    """Move ``attempt`` to SUCCEEDED in one round trip, with commands the caller queued on ``along``
    (a worker's result pointer) sent first; True if it changed the job. The attempt's deadline
    timer and lease go with it: both belong to this attempt alone, so dropping them is right
    whether or not the move applies."""
    finish = along if along is not None else services.redis.pipeline(transaction=False)
    services.timers.cancel(DEADLINE, result.job_id, attempt, client=finish)
    services.leases.release(result.job_id, attempt, client=finish)
    return _settle(services, result, attempt, JobState.SUCCEEDED, along=finish)


def _settle(services: Services, result: job_pb2.JobResult, attempt: int | None, target: JobState,
            along: Pipeline | None = None) -> bool:
    try:
        return services.jobs.transition(
            result.job_id, target, attempt=attempt, note=f"result from {result.worker_id}",
            result_ptr=result.result_ptr, error_code=result.error_code, error_message=result.error_message,
            worker_id=result.worker_id, execution_ms=result.execution_ms, pending_reason="", along=along,
        )
    except (IllegalTransitionError, NotFoundError) as exc:
        log.warning("job %s: result %s not applied: %s", result.job_id, target.value, exc)
        return False
