"""Submit a job: store its input behind a ctx: pointer, create the PENDING record (deduplicated
by the tenant's idempotency key) and run it through the dispatch pipeline.

This is the one entry point for every job, whoever submits it (gateway, coretexctl, the workflow
engine, tests). The pipeline runs right here, in the submitting process, like the gateway's other
calls to the kernel: one queue hop fewer than handing it to a control worker, and the caller
learns at once whether the job was dispatched, denied or parked. ``inline=False`` (or
``CORETEX_QUEUE_SUBMITS=1``) hands the ``BusPacket{job_request}`` to the control queue instead,
where any control worker takes it (a workflow's fan-out shares its dispatches that way). Either
way, a job the pipeline never finished (its process died) stays in the undispatched set, and the
tick hands it to the scheduler again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from coretex.bus import DISPATCH_TASK, send_packet
from coretex.errors import CoretexError, StoreError
from coretex.model.canonical import canonical_json
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.dispatcher import ACCEPTED, dispatch_accepted, dispatch_ahead
from coretex.scheduler.packets import DRY_RUN_LABEL, job_request_packet
from coretex.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitRequest:
    topic: str
    input: Any
    meta: JobMeta
    idempotency_key: str = ""
    max_retries: int | None = None
    """This job's retries instead of its topic's (the policy may still lower it)."""
    timeout_seconds: int | None = None
    """This job's attempt deadline instead of its topic's (the policy may still lower it)."""
    job_id: str = ""
    """A caller-derived id (a workflow step's attempt); submitting it again returns the first job."""
    trace_id: str = ""
    step: StepRef | None = None
    """The workflow run step this job is an attempt of."""
    dry_run: bool = False


@dataclass(frozen=True)
class StepRef:
    run_id: str
    workflow_id: str
    step_id: str
    attempt: int
    item: int = -1


@dataclass(frozen=True)
class SubmitReceipt:
    job_id: str
    trace_id: str
    created: bool
    """False when the idempotency key matched an earlier job, whose ids are returned instead."""
    state: JobState = JobState.PENDING
    """Where the job stood when the call returned: DISPATCHED, DENIED, APPROVAL_REQUIRED, ..."""


class InputTooLargeError(CoretexError):
    """The job input exceeds the tenant's ``limits.max_input_bytes``; nothing was written."""

    code = "input_too_large"


def submit_job(services: Services, request: SubmitRequest, *, inline: bool | None = None) -> SubmitReceipt:
    """Create the job and run the dispatch pipeline on it (``inline=False``: in a control worker;
    None: as ``CORETEX_QUEUE_SUBMITS`` says)."""
    if inline is None:
        inline = not services.settings.queue_submits
    check_input_size(services, request.meta.tenant_id, request.input)
    job_id = request.job_id or str(uuid.uuid4())
    trace_id = request.trace_id or uuid.uuid4().hex
    tenant = request.meta.tenant_id
    idem_key = request.idempotency_key or request.meta.idempotency_key
    if idem_key and (owner := services.jobs.idempotent_owner(tenant, idem_key)):
        return _duplicate(services, owner)  # fast path: no input written for a known duplicate
    written = services.redis.pipeline(transaction=False)  # the input goes in the create's round trip
    context = services.pointers.put_context(job_id, tenant, request.input, client=written)
    record = _new_record(request, job_id, trace_id, context.uri, idem_key)
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    ahead = dispatch_ahead(services, record, packet, request.input) if inline else None  # the kernel decides meanwhile
    owner, created = services.jobs.create(record, idempotency_key=idem_key,
                                          window_s=services.settings.idempotency_window_s,
                                          accept_note=ACCEPTED if inline else "", along=written)
    if not created:  # a concurrent duplicate won the race; our ctx: copy expires with its TTL
        return _duplicate(services, owner)
    if inline:
        try:
            state = dispatch_accepted(services, replace(record, state=JobState.SCHEDULED), packet, request.input,
                                      ahead=ahead)
        except Exception:  # the job exists and waits in the undispatched set: the tick sends it on
            log.exception("job %s: the dispatch pipeline failed here; the tick will hand it over", job_id)
            state = _state_or_scheduled(services, job_id)
        return SubmitReceipt(job_id, trace_id, created=True, state=state)
    try:
        send_packet(services.app, DISPATCH_TASK, packet, queue=services.settings.control_queue)
    except Exception as exc:
        # The broker refused: end the job visibly rather than leave a PENDING ghost.
        services.jobs.transition(job_id, JobState.FAILED, note="broker_unavailable",
                                 error_code="broker_unavailable", error_message=str(exc))
        raise StoreError(f"could not hand job {job_id} to the scheduler: {exc}") from exc
    return SubmitReceipt(job_id, trace_id, created=True)


def _new_record(request: SubmitRequest, job_id: str, trace_id: str, context_ptr: str, idem_key: str) -> JobRecord:
    now = time.time()
    step = request.step or StepRef("", "", "", 0)
    meta = replace(request.meta, idempotency_key=idem_key)
    if request.dry_run:
        meta = replace(meta, labels={**meta.labels, DRY_RUN_LABEL: "true"})
    return JobRecord(
        job_id=job_id,
        topic=request.topic,
        tenant_id=request.meta.tenant_id,
        state=JobState.PENDING,
        trace_id=trace_id,
        context_ptr=context_ptr,
        created_at=now,
        updated_at=now,
        meta=meta,
        requested_retries=-1 if request.max_retries is None else request.max_retries,
        requested_timeout_s=request.timeout_seconds or 0,
        run_id=step.run_id, workflow_id=step.workflow_id, step_id=step.step_id, step_attempt=step.attempt,
        step_item=step.item, dry_run=int(request.dry_run),
    )


def resend_submit(services: Services, record: JobRecord) -> None:
    """Hand a PENDING or SCHEDULED job to the scheduler again: its submit packet was lost (the
    control worker died holding it). Dispatch is idempotent, so a duplicate changes nothing."""
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    send_packet(services.app, DISPATCH_TASK, packet, queue=services.settings.control_queue)


def check_input_size(services: Services, tenant: str, value: Any, what: str = "input") -> None:
    """Refuse ``value`` over the tenant's ``limits.max_input_bytes`` (canonical JSON); nothing is written."""
    limit = services.live_config.section("limits", tenant).get("max_input_bytes") or services.settings.max_input_bytes
    size = len(canonical_json(value).encode())
    if size > limit:
        raise InputTooLargeError(f"{what} is {size} bytes of canonical JSON; tenant {tenant}'s limit is {limit} bytes")


def _state_or_scheduled(services: Services, job_id: str) -> JobState:
    """The job's state after a pipeline that failed part-way (SCHEDULED if even that read fails)."""
    try:
        return services.jobs.get(job_id).state
    except CoretexError:
        return JobState.SCHEDULED


def _duplicate(services: Services, owner: str) -> SubmitReceipt:
    original = services.jobs.get(owner)
    return SubmitReceipt(original.job_id, original.trace_id, created=False, state=original.state)
