"""Cancel a job: cooperatively first, forcefully only as the last resort.

A job not yet running is cancelled on the spot. A running job is cancelled in its record at once
(so nothing it reports later is applied, and it is never retried) and told so through a
``BusPacket{job_cancel}`` under ``<ns>:cancel:<job_id>``, which its worker's heartbeat reads: the
handler sees ``job.cancelled`` within one heartbeat. If the attempt still holds its lease after
the grace period, the tick revokes the Celery task with terminate (PITFALLS: revokes are
in-memory and can hit a reused process, so they are never the first resort).
"""

from __future__ import annotations

import base64
import time

from coretex.agent.v1 import job_pb2
from coretex.model.job import JobState
from coretex.protocol.envelope import encode_packet, new_packet
from coretex.services import Services
from coretex.store._redis import redis_errors
from coretex.store.timers import DEADLINE, RETRY, Timer

REVOKE = "revoke"
CANCEL_SIGNAL_TTL_S = 3600


def cancel_job(services: Services, job_id: str, requested_by: str, reason: str = "") -> JobState:
    """Cancel ``job_id``; return its state afterwards (a job that already ended keeps its state)."""
    record = services.jobs.get(job_id)
    if record.terminal:
        return record.state
    message = f"cancelled by {requested_by}" + (f": {reason}" if reason else "")
    changed = services.jobs.transition(job_id, JobState.CANCELLED, note=message,
                                       error_code="cancelled", error_message=message)
    if not changed:
        return JobState.CANCELLED
    attempt = record.attempts
    services.timers.cancel(RETRY, job_id, attempt)
    services.timers.cancel(DEADLINE, job_id, attempt)
    if record.state in (JobState.DISPATCHED, JobState.RUNNING):
        signal = new_packet(sender_id=services.settings.sender_id, trace_id=record.trace_id,
                            job_cancel=job_pb2.JobCancel(job_id=job_id, reason=reason, requested_by=requested_by))
        with redis_errors(f"signal cancel of job {job_id}"):
            packet = base64.b64encode(encode_packet(signal)).decode()  # text: our clients decode responses
            services.redis.set(cancel_key(services, job_id), packet, ex=CANCEL_SIGNAL_TTL_S)
        grace = services.settings.lease_s + 1  # a heartbeat (lease/3) to notice, two more to wind down
        services.timers.schedule(Timer(REVOKE, job_id, attempt, time.time() + grace))
    return JobState.CANCELLED


def cancel_key(services: Services, job_id: str) -> str:
    return f"{services.settings.namespace}:cancel:{job_id}"


def cancel_requested(services: Services, job_id: str) -> bool:
    with redis_errors(f"read cancel signal of job {job_id}"):
        return bool(services.redis.exists(cancel_key(services, job_id)))


def fire_revoke(services: Services, timer: Timer) -> None:
    """Grace is over: if the attempt still holds its lease, terminate its Celery task."""
    if services.leases.held(timer.job_id, timer.attempt):
        services.app.control.revoke(f"{timer.job_id}:{timer.attempt}", terminate=True, signal="SIGTERM")
        services.leases.release(timer.job_id, timer.attempt)
