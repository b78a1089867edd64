"""Apply a worker's ``JobResult`` to the job record exactly once.

The lifecycle check in the store makes this idempotent: a repeated result finds the job already
in that state ("same") and changes nothing; a result for a job that already ended differently
(for example TIMEOUT, or CANCELLED) is refused by the lifecycle and only logged.
"""

from __future__ import annotations

import logging

from coretex.agent.v1 import job_pb2
from coretex.errors import IllegalTransitionError, NotFoundError
from coretex.model.job import JobState
from coretex.scheduler.dead_letter import dead_letter
from coretex.scheduler.packets import state_of
from coretex.services import Services

log = logging.getLogger(__name__)


def apply_result(services: Services, result: job_pb2.JobResult) -> bool:
    """Record ``result``; return True if it changed the job."""
    target = state_of(result.status)
    if target is None:
        log.warning("job %s: ignoring result with status %s", result.job_id,
                    job_pb2.JobStatus.Name(result.status) if result.status in job_pb2.JobStatus.values()
                    else result.status)
        return False
    try:
        previous = services.jobs.get(result.job_id).state
        changed = services.jobs.transition(
            result.job_id, target, note=f"result from {result.worker_id}",
            result_ptr=result.result_ptr, error_code=result.error_code,
            error_message=result.error_message, worker_id=result.worker_id,
            execution_ms=result.execution_ms,
        )
    except (IllegalTransitionError, NotFoundError) as exc:
        log.warning("job %s: result %s not applied: %s", result.job_id, target.value, exc)
        return False
    if changed and target == JobState.FAILED:
        dead_letter(services, services.jobs.get(result.job_id), previous,
                    result.error_code or "worker_failed", result.error_message)
    return changed
