"""Carry out a run's committed commands. Each is idempotent by a natural id, so replaying one
(after a crash, or by the tick) changes nothing that already happened.

- DispatchJob: submit the step's job with its derived job id through the scheduler's one entry
  point (kernel check, routing, budgets ... like any job). The job does not retry on its own:
  the run's retry policy decides. A job id that exists already is not created again.
- CancelJob: the scheduler's cancel (cooperative, then revoke).
- EmitAlert: a CAP ``SystemAlert`` on the alerts stream and channel.
- FinishRun: the run ended; logged (its indexes were updated in the commit).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from coretex.errors import NotFoundError
from coretex.kernel.alerts import alert_packet, publish_alert
from coretex.model.job import TERMINAL_STATES, JobMeta, JobState
from coretex.scheduler.cancel import cancel_job
from coretex.scheduler.submit import InputTooLargeError, StepRef, SubmitRequest, submit_job
from coretex.workflow.commands import CancelJob, Command, DispatchJob, EmitAlert, FinishRun
from coretex.workflow.events import JobProgress, JobResult
from coretex.workflow.run import STEP_ACTIVE, Run, Slot

if TYPE_CHECKING:
    from coretex.engine.engine import Engine

log = logging.getLogger(__name__)


def execute_command(engine: Engine, run: Run, command: Command, *, inline: bool = False) -> bool:
    """Carry out ``command`` for ``run`` as it stands now; ``inline``: a job enters the dispatch
    pipeline in this process. True when doing so moved the run on (the caller reloads it)."""
    if isinstance(command, DispatchJob):
        return _dispatch(engine, run, command, inline)
    if isinstance(command, CancelJob):
        _cancel(engine, run, command)
    elif isinstance(command, EmitAlert):
        _alert(engine, run, command)
    elif isinstance(command, FinishRun):
        log.info("run %s of workflow %s ended %s", run.run_id, run.workflow.id, command.status)
    return False


def still_wanted(run: Run, command: DispatchJob) -> bool:
    """Whether the run still waits for this job: it has not ended and the step (or item) is on the
    command's attempt. A replayed or late dispatch of an abandoned attempt never starts a job."""
    if run.terminal:
        return False
    state = run.steps.get(command.step_id)
    if state is None:
        return False
    if command.item is None:
        slot: Slot = state
    elif state.items is not None and 0 <= command.item < len(state.items):
        slot = state.items[command.item]
    else:
        return False
    return (slot.status in STEP_ACTIVE and not slot.retry_pending and slot.job_id == command.job_id
            and slot.attempt == command.attempt)


def _dispatch(engine: Engine, run: Run, command: DispatchJob, inline: bool) -> bool:
    if not still_wanted(run, command):
        log.info("run %s: dispatch of %s attempt %s no longer wanted", run.run_id, command.step_id, command.attempt)
        return False
    services = engine.services
    meta = command.meta
    request = SubmitRequest(
        topic=command.topic,
        input=command.input,
        meta=JobMeta(
            tenant_id=run.tenant, actor_id=meta.actor_id or run.started_by, actor_type=meta.actor_type or "service",
            idempotency_key=meta.idempotency_key, capability=meta.capability, risk_tags=meta.risk_tags,
            requires=meta.requires, pack_id=meta.pack_id, labels=dict(meta.labels),
        ),
        max_retries=0,
        timeout_seconds=math.ceil(command.timeout_sec) if command.timeout_sec else None,
        job_id=command.job_id,
        trace_id=run.trace_id,
        step=StepRef(run.run_id, run.workflow.id, command.step_id, command.attempt,
                     -1 if command.item is None else command.item),
        dry_run=command.dry_run,
    )
    try:
        receipt = submit_job(services, request, inline=inline)
    except InputTooLargeError as exc:
        engine.handle(run.run_id, JobResult(time.time(), command.step_id, command.attempt, command.job_id, "failed",
                                            item=command.item, error_code=exc.code, error_message=str(exc)))
        return True
    if receipt.created:
        if receipt.state in TERMINAL_STATES or receipt.state is JobState.APPROVAL_REQUIRED:
            engine.job_changed(receipt.job_id)  # denied, unroutable, a dry run recorded, parked
            return True
        return False
    if receipt.job_id != command.job_id:
        # The step's idempotency key matched an earlier job: the step follows that job.
        engine.handle(run.run_id, JobProgress(time.time(), command.step_id, command.attempt, receipt.job_id, "attached",
                                              item=command.item, replaces=command.job_id))
        engine.job_changed(receipt.job_id)
        return True
    if not receipt.created:  # a replay: the job exists and may even have ended already
        engine.job_changed(command.job_id)
        return True
    return False


def _cancel(engine: Engine, run: Run, command: CancelJob) -> None:
    try:
        cancel_job(engine.services, command.job_id, requested_by=f"run {run.run_id}", reason=command.reason)
    except NotFoundError:
        pass  # never created (the run ended before its dispatch executed): nothing to stop


def _alert(engine: Engine, run: Run, command: EmitAlert) -> None:
    services = engine.services
    packet = alert_packet(services.settings.sender_id, code=command.code, message=command.message,
                          component=f"workflow/{run.workflow.id}", level=command.level)
    packet.trace_id = run.trace_id
    publish_alert(services.redis, services.settings.namespace, packet)
