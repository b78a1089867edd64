"""Drive one submitted job through the pipeline and record how it ended.

At-least-once: a redelivered submit packet for a job that already left SCHEDULED is ignored, so
the pipeline's effects (DLQ entries, publishes) happen once per attempt. When the broker is the
Redis that holds the job, the move to DISPATCHED pushes the message itself (one Lua step). With a
broker elsewhere, DISPATCHED is written before the message is sent; if the send fails the attempt
fails (retryable) rather than leaving a job that claims to be dispatched but is not, and a sender
that dies in between leaves the job in the undispatched set for the tick to send again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from typing import Any

from coretex.agent.v1 import buspacket_pb2
from coretex.bus import EXECUTE_TASK, packet_delivery, queue_depth, send_packet
from coretex.kernel.wire import constraints_from_wire
from coretex.model.job import JobRecord, JobState
from coretex.policy.constraints import Sandbox
from coretex.scheduler.approvals import is_approved, park_for_approval
from coretex.scheduler.budgets import JobBudget, budget_for
from coretex.scheduler.dead_letter import end_with_dead_letter
from coretex.scheduler.packets import (
    ATTEMPT_ENV,
    MAX_ARTIFACT_BYTES_ENV,
    REDACTION_LEVEL_ENV,
    SANDBOX_ENV,
    TIMEOUT_ENV,
    job_request_packet,
)
from coretex.scheduler.pipeline import (
    NOT_LOADED,
    Backpressure,
    Dispatch,
    DryRunGate,
    PolicyCheck,
    Routing,
    SecretDetection,
    Stage,
    Verdict,
    run_stages,
    would_dispatch,
)
from coretex.scheduler.retries import fail_attempt
from coretex.scheduler.routing import sandbox_profile
from coretex.services import Services
from coretex.store.jobs import ActiveLimit, ConcurrencyLimitError
from coretex.store.timers import DEADLINE, RETRY, Timer
from coretex.store.workers import HEARTBEAT_INTERVAL_S

log = logging.getLogger(__name__)

HOLD_RECHECK_S = 1.0
DEADLINE_GRACE_S = 10
"""The tick's deadline fires this long after the worker's own soft limit, so the worker's
TIMEOUT report normally wins and the tick only catches workers that vanished."""


def default_stages(services: Services) -> list[Stage]:
    return [
        SecretDetection(services.pointers.get_json),
        PolicyCheck(services.kernel.check_ahead, lambda dispatch: is_approved(services, dispatch),
                    kernel_wait_s=services.settings.kernel_wait_s),
        Routing(services.router.route),
        DryRunGate(lambda pool, topic: services.workers.simulates(pool, topic, time.time(), HEARTBEAT_INTERVAL_S)),
        Backpressure(
            depth=lambda pool: queue_depth(services.app, services.settings.pool_queue(pool)),
            pools=lambda: services.router.pools, now=time.time,
        ),
    ]


ACCEPTED = "accepted by scheduler"


def dispatch_job(services: Services, packet: buspacket_pb2.BusPacket) -> JobState:
    """Run the pipeline for a job handed over by its submit packet; return the state it was left in."""
    request = packet.job_request
    record = services.jobs.get(request.job_id)
    if record.state not in (JobState.PENDING, JobState.SCHEDULED):
        log.info("job %s already %s; ignoring redelivered submit", record.job_id, record.state.value)
        return record.state
    services.jobs.transition(record.job_id, JobState.SCHEDULED, note=ACCEPTED)
    return dispatch_accepted(services, record, packet)


def dispatch_ahead(services: Services, record: JobRecord, packet: buspacket_pb2.BusPacket,
                   payload: Any = NOT_LOADED) -> Dispatch:
    """Start the pipeline of a job whose record is about to be written: the stages before the
    policy check run, and the Check is sent, so the kernel decides while the caller writes the
    record; :func:`dispatch_accepted` goes on from there. Anything unusual here (a stage that
    stops the job or fails) leaves the whole pipeline to run after the record exists.

    The Check's audit record is written even if the record turns out to be a duplicate's."""
    dispatch = Dispatch(record=record, request=packet.job_request, payload=payload)
    stages = default_stages(services)
    try:
        if run_stages(stages, dispatch, until=PolicyCheck.name) is None:
            next(stage for stage in stages if isinstance(stage, PolicyCheck)).ask_ahead(dispatch)
            return dispatch
    except Exception:  # the same stages run again once the record exists, and are handled there
        log.exception("job %s: the pipeline could not start ahead of the record", record.job_id)
    return Dispatch(record=record, request=packet.job_request, payload=payload)


def dispatch_accepted(services: Services, record: JobRecord, packet: buspacket_pb2.BusPacket,
                      payload: Any = NOT_LOADED, ahead: Dispatch | None = None) -> JobState:
    """Run the pipeline for a SCHEDULED job; ``payload`` is its input when the caller has it at
    hand, ``ahead`` what :func:`dispatch_ahead` started for it."""
    if ahead is not None:
        dispatch = replace(ahead, record=record)
    else:
        dispatch = Dispatch(record=record, request=packet.job_request, payload=payload)
    verdict = run_stages(default_stages(services), dispatch)
    if verdict is not None:
        return stop_job(services, dispatch, verdict)
    return publish(services, dispatch, packet)


def publish(services: Services, dispatch: Dispatch, packet: buspacket_pb2.BusPacket) -> JobState:
    """Start a new attempt: record DISPATCHED and arm its deadline timer (before sending, so a fast
    worker never finds the job still SCHEDULED), then send it with Celery time limits."""
    record = dispatch.record
    requested = JobBudget(record.requested_timeout_s, record.requested_retries)
    budget = budget_for(services.live_config.section("timeouts", record.tenant_id), record.topic,
                        dispatch.constraints, requested)
    limits = services.live_config.section("limits", record.tenant_id)
    attempt = record.attempts + 1
    packet.job_request.env[ATTEMPT_ENV] = str(attempt)
    packet.job_request.env[TIMEOUT_ENV] = str(budget.timeout_s)
    _constraints_to_env(dispatch, packet.job_request.env)
    # The deadline goes in the same round trip; should the move be refused, a deadline for an
    # attempt that never started finds the job elsewhere and does nothing.
    deadline = services.redis.pipeline(transaction=False)
    services.timers.schedule(Timer(DEADLINE, record.job_id, attempt, time.time() + budget.timeout_s + DEADLINE_GRACE_S),
                             client=deadline)
    queue, task_id = services.settings.pool_queue(dispatch.pool), f"{record.job_id}:{attempt}"
    delivery = _delivery(services, packet, queue, task_id, budget.timeout_s)
    try:
        moved = services.jobs.transition(
            record.job_id, JobState.DISPATCHED, note=f"attempt {attempt} sent to pool {dispatch.pool}",
            limits=_concurrency_limits(services, dispatch, limits), attempts=attempt, pool=dispatch.pool,
            timeout_s=budget.timeout_s, max_retries=budget.max_retries, pending_reason="",
            policy_max_retries=_policy_max_retries(dispatch), **dispatch.decision_fields(),
            dispatch_env=json.dumps(dict(packet.job_request.env), sort_keys=True), along=deadline, deliver=delivery,
        )
    except ConcurrencyLimitError as exc:
        return _over_limit(services, dispatch, exc)
    if not moved:  # a duplicate submit packet raced this one and already sent the attempt
        log.info("job %s attempt %s already dispatched; not sending it twice", record.job_id, attempt)
        return JobState.DISPATCHED
    if not services.workers.pool_alive(dispatch.pool, time.time(), HEARTBEAT_INTERVAL_S):
        services.jobs.note_pending(record.job_id, f"no_live_worker: no worker of pool {dispatch.pool} "
                                                  "sent a heartbeat recently; the job waits on its queue")
    if delivery is not None:
        return JobState.DISPATCHED  # its message went onto the queue with the move
    try:
        send_packet(services.app, EXECUTE_TASK, packet, queue=queue, task_id=task_id, time_limit_s=budget.timeout_s)
    except Exception as exc:  # kombu raises many types; any of them means "not sent"
        fail_attempt(services, record.job_id, attempt, code="broker_unavailable", retryable=True,
                     message=f"could not publish to pool {dispatch.pool}: {exc}")
        return services.jobs.get(record.job_id).state
    services.jobs.forget_undispatched(record.job_id)  # sent: from here on the lease and deadline watch it
    return JobState.DISPATCHED


def _delivery(services: Services, packet: buspacket_pb2.BusPacket, queue: str, task_id: str,
              timeout_s: int) -> tuple[str, str] | None:
    """The attempt's message for the move to DISPATCHED to push itself, when the broker is the very
    Redis that holds the job (one atomic step, and a round trip less); None: send it after the move."""
    if services.settings.broker_url != services.settings.redis_url:
        return None
    try:
        return packet_delivery(services.app, EXECUTE_TASK, packet, queue=queue, task_id=task_id,
                               time_limit_s=timeout_s)
    except Exception:  # kombu refusing to build it here: the ordinary send path still works
        log.exception("job %s: could not build its message ahead; sending it after the move", task_id)
        return None


def resend_execute(services: Services, record: JobRecord) -> None:
    """Send a DISPATCHED attempt's message again, exactly as first sent: the process that moved the
    job to DISPATCHED died before its send was confirmed (the tick notices). A message that did go
    out makes this a duplicate delivery of the same attempt: at-least-once, applied once."""
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    packet.job_request.env.update(json.loads(record.dispatch_env or "{}"))
    send_packet(services.app, EXECUTE_TASK, packet, queue=services.settings.pool_queue(record.pool),
                task_id=f"{record.job_id}:{record.attempts}", time_limit_s=record.timeout_s or None)


def stop_job(services: Services, dispatch: Dispatch, verdict: Verdict) -> JobState:
    record = dispatch.record
    if verdict.state is JobState.SCHEDULED:  # held: look again after a short wait
        return hold(services, dispatch, verdict)
    changes = {"note": verdict.error_code, "error_code": verdict.error_code, "error_message": verdict.error_message,
               **dispatch.decision_fields()}
    if verdict.state is JobState.SUCCEEDED:  # a dry run recorded instead of sent
        result = services.pointers.put_result(record.job_id, record.tenant_id, would_dispatch(dispatch))
        changes.update(error_code="", error_message="", result_ptr=result.uri, pool=dispatch.pool)
    if verdict.state is JobState.APPROVAL_REQUIRED:
        park_for_approval(services, dispatch)
        changes.update(error_code="", error_message="",
                       pending_reason=f"awaiting_approval: rule {dispatch.rule_id}: {verdict.error_message}")
    scheduled = replace(record, state=JobState.SCHEDULED)
    if verdict.dead_letter:
        end_with_dead_letter(services, scheduled, verdict.state, dlq_code=verdict.error_code,
                             dlq_message=verdict.error_message, **changes)
    else:
        services.jobs.transition(record.job_id, verdict.state, **changes)
    return verdict.state


def _policy_max_retries(dispatch: Dispatch) -> int:
    constraints = dispatch.constraints
    if constraints is None or not constraints.HasField("budgets") or constraints.budgets.max_retries <= 0:
        return -1  # proto3: 0 means "not set"
    return int(constraints.budgets.max_retries)


def _concurrency_limits(services: Services, dispatch: Dispatch, limits: Mapping[str, Any]) -> list[ActiveLimit]:
    """The sets a dispatched job joins: its tenant's (config, tightened by the policy's
    max_concurrent_jobs budget), its actor's, and its pool's in-flight limit."""
    record = dispatch.record
    from_policy = dispatch.constraints.budgets.max_concurrent_jobs if dispatch.constraints is not None else 0
    tenant_caps = [n for n in (limits.get("max_concurrent_jobs"), from_policy or None) if n]
    return [
        ActiveLimit(f"tenant:{record.tenant_id}", min(tenant_caps) if tenant_caps else None),
        ActiveLimit(f"actor:{record.tenant_id}:{record.meta.actor_id}", limits.get("max_concurrent_jobs_per_actor")),
        ActiveLimit(f"pool:{dispatch.pool}", services.router.pools[dispatch.pool].max_in_flight),
    ]


def _over_limit(services: Services, dispatch: Dispatch, exc: ConcurrencyLimitError) -> JobState:
    """Hold a job over a concurrency limit; a pool that stays busy past its max_hold_s fails it."""
    if exc.scope.startswith("pool:"):
        hold_s = services.router.pools[dispatch.pool].max_hold_s
        if time.time() - dispatch.record.created_at >= hold_s:
            return stop_job(services, dispatch, Verdict(JobState.FAILED, "pool_overloaded",
                                                        f"{exc}; gave up after {hold_s}s"))
        return hold(services, dispatch, Verdict(JobState.SCHEDULED, "pool_overloaded", str(exc), dead_letter=False))
    code = "tenant_quota" if exc.scope.startswith("tenant:") else "actor_quota"
    return hold(services, dispatch, Verdict(JobState.SCHEDULED, code, str(exc), dead_letter=False))


def _constraints_to_env(dispatch: Dispatch, env: MutableMapping[str, str]) -> None:
    """Hand the worker the policy constraints its SDK enforces before and while the handler runs."""
    constraints = dispatch.constraints
    if constraints is None:
        return
    if constraints.budgets.max_artifact_bytes > 0:
        env[MAX_ARTIFACT_BYTES_ENV] = str(constraints.budgets.max_artifact_bytes)
    if constraints.redaction_level:
        env[REDACTION_LEVEL_ENV] = constraints.redaction_level
    sandbox = constraints_from_wire(constraints).sandbox
    if sandbox != Sandbox():
        env[SANDBOX_ENV] = json.dumps(sandbox_profile(sandbox), separators=(",", ":"))


def hold(services: Services, dispatch: Dispatch, verdict: Verdict) -> JobState:
    """Keep the job SCHEDULED with its pending reason and re-run the pipeline after a short wait."""
    record = dispatch.record
    services.jobs.note_pending(record.job_id, f"{verdict.error_code}: {verdict.error_message}")
    services.timers.schedule(Timer(RETRY, record.job_id, record.attempts, time.time() + HOLD_RECHECK_S))
    return JobState.SCHEDULED
