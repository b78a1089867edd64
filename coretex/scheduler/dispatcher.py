"""Drive one submitted job through the pipeline and record how it ended.

At-least-once: a redelivered submit packet for a job that already left SCHEDULED is ignored, so
the pipeline's effects (DLQ entries, publishes) happen once per job in the normal case; a crash
between publish and the DISPATCHED write may publish twice, which the result path tolerates.
"""

from __future__ import annotations

import logging

from coretex.agent.v1 import buspacket_pb2
from coretex.bus import EXECUTE_TASK, send_packet
from coretex.model.job import JobState
from coretex.scheduler.approvals import is_approved, park_for_approval
from coretex.scheduler.dead_letter import dead_letter
from coretex.scheduler.pipeline import Dispatch, PolicyCheck, Routing, SecretDetection, Stage, Verdict, run_stages
from coretex.services import Services

log = logging.getLogger(__name__)


def default_stages(services: Services) -> list[Stage]:
    return [
        SecretDetection(services.pointers.get_json),
        PolicyCheck(services.kernel.check, lambda dispatch: is_approved(services, dispatch)),
        Routing(services.router.route),
    ]


def dispatch_job(services: Services, packet: buspacket_pb2.BusPacket) -> JobState:
    """Run the pipeline for a submitted job; return the state it was left in."""
    request = packet.job_request
    record = services.jobs.get(request.job_id)
    if record.state not in (JobState.PENDING, JobState.SCHEDULED):
        log.info("job %s already %s; ignoring redelivered submit", record.job_id, record.state.value)
        return record.state
    services.jobs.transition(record.job_id, JobState.SCHEDULED, note="accepted by scheduler")
    dispatch = Dispatch(record=record, request=request)
    verdict = run_stages(default_stages(services), dispatch)
    if verdict is not None:
        return stop_job(services, dispatch, verdict)
    return publish(services, dispatch, packet)


def publish(services: Services, dispatch: Dispatch, packet: buspacket_pb2.BusPacket) -> JobState:
    """Record DISPATCHED, then send: a fast worker must never find the job still SCHEDULED."""
    job_id = dispatch.record.job_id
    services.jobs.increment_attempts(job_id)
    services.jobs.transition(
        job_id, JobState.DISPATCHED, note=f"sent to pool {dispatch.pool}",
        pool=dispatch.pool, **dispatch.decision_fields(),
    )
    try:
        send_packet(services.app, EXECUTE_TASK, packet, queue=services.settings.pool_queue(dispatch.pool))
    except Exception as exc:  # kombu raises many types; any of them means "not sent"
        message = f"could not publish to pool {dispatch.pool}: {exc}"
        services.jobs.transition(job_id, JobState.FAILED, note="broker_unavailable",
                                 error_code="broker_unavailable", error_message=message)
        dead_letter(services, services.jobs.get(job_id), JobState.DISPATCHED, "broker_unavailable", message)
        return JobState.FAILED
    return JobState.DISPATCHED


def stop_job(services: Services, dispatch: Dispatch, verdict: Verdict) -> JobState:
    record = dispatch.record
    if verdict.state is JobState.APPROVAL_REQUIRED:
        park_for_approval(services, dispatch)
    services.jobs.transition(
        record.job_id, verdict.state, note=verdict.error_code,
        error_code=verdict.error_code, error_message=verdict.error_message, **dispatch.decision_fields(),
    )
    if verdict.dead_letter:
        dead_letter(services, services.jobs.get(record.job_id), JobState.SCHEDULED,
                    verdict.error_code, verdict.error_message)
    return verdict.state
