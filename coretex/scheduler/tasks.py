"""Celery tasks of the control queue: dispatch submitted jobs, apply results, tick."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from coretex.bus import DISPATCH_TASK, RESULT_TASK, TICK_TASK, parse_result_task_id, register_task
from coretex.errors import EnvelopeError, NotFoundError
from coretex.model.job import TERMINAL_STATES, JobState
from coretex.protocol.envelope import decode_packet
from coretex.scheduler.cancel import REVOKE, fire_revoke
from coretex.scheduler.dispatcher import dispatch_job
from coretex.scheduler.lost_submits import resubmit_lost
from coretex.scheduler.results import apply_result
from coretex.scheduler.retries import fire_deadline, fire_retry, reap_lease
from coretex.services import Services
from coretex.store.timers import DEADLINE, RETRY

log = logging.getLogger(__name__)

TIMER_ACTIONS = {RETRY: fire_retry, DEADLINE: fire_deadline, REVOKE: fire_revoke}


JobListener = Callable[[Services, str], None]
"""Called with a job id after the control plane may have moved that job (the workflow engine)."""
TickHook = Callable[[Services, float], None]


def register_control_tasks(app: Celery, services: Callable[[], Services], *,
                           job_listener: JobListener | None = None, tick_hook: TickHook | None = None) -> None:
    """Register the control tasks on ``app``; ``services()`` returns this process's Services.

    ``job_listener`` hears of every job a control task may have ended or parked, and ``tick_hook``
    runs in every tick: the workflow engine plugs in here without the scheduler knowing it.
    """

    def changed(job_id: str) -> None:
        if job_listener is None:
            return
        try:
            job_listener(services(), job_id)
        except Exception:  # the job's own change is done; the tick reconciles the run later
            log.exception("job %s: listener failed", job_id)

    def dispatch(data: bytes) -> None:
        try:
            packet = decode_packet(data, expect="job_request")
        except EnvelopeError as exc:
            log.error("quarantined an undecodable submit packet: %s", exc)
            services().dlq.quarantine(DISPATCH_TASK, str(exc), data)
            return
        try:
            state = dispatch_job(services(), packet)
        except NotFoundError:
            log.error("submit packet for unknown job %s dropped", packet.job_request.job_id)
            return
        if state in TERMINAL_STATES or state is JobState.APPROVAL_REQUIRED:
            changed(packet.job_request.job_id)

    def result(task: Any, data: bytes) -> None:
        try:
            packet = decode_packet(data, expect="job_result")
        except EnvelopeError as exc:
            log.error("quarantined an undecodable result packet: %s", exc)
            services().dlq.quarantine(RESULT_TASK, str(exc), data)
            return
        attempt, retryable = parse_result_task_id(task.request.id)
        apply_result(services(), packet.job_result, attempt, retryable)
        changed(packet.job_result.job_id)  # also when the worker already wrote its success through

    def tick() -> None:
        """Beat's housekeeping: due timers (retries, deadlines), expired leases, lost submits, artifact
        retention, then the tick hook (the workflow engine's timers, outbox and reconcile)."""
        svc = services()
        now = time.time()
        svc.redis.set(f"{svc.settings.namespace}:beat:last_tick", repr(now), ex=60)
        for timer in svc.timers.pop_due(now):
            TIMER_ACTIONS[timer.kind](svc, timer)
            changed(timer.job_id)
        for lease in svc.leases.pop_expired(now):
            reap_lease(svc, lease.job_id, lease.attempt)
            changed(lease.job_id)
        resubmit_lost(svc, now)
        if tick_hook is not None:
            try:
                tick_hook(svc, now)
            except Exception:
                log.exception("tick hook failed")
        swept = svc.artifacts.sweep(now)
        if swept:
            log.info("retention sweep removed %s expired artifacts", swept)

    register_task(app, DISPATCH_TASK, dispatch)
    register_task(app, RESULT_TASK, result, bind=True)
    register_task(app, TICK_TASK, tick)
