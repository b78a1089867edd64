"""Submit a job: store its input behind a ctx: pointer, create the PENDING record (deduplicated
by the tenant's idempotency key) and hand a ``BusPacket{job_request}`` to the scheduler.

This is the one entry point for every job, whoever submits it (gateway, coretexctl, tests).
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


class InputTooLargeError(CoretexError):
    """The job input exceeds the tenant's ``limits.max_input_bytes``; nothing was written."""

    code = "input_too_large"


def submit_job(services: Services, request: SubmitRequest, *, send: bool = True) -> SubmitReceipt:
    """Create the job and hand it to the scheduler. ``send=False``: the caller runs the dispatch
    pipeline itself, in-process (the workflow engine in a control worker)."""
    check_input_size(services, request.meta.tenant_id, request.input)
    job_id = request.job_id or str(uuid.uuid4())
    trace_id = request.trace_id or uuid.uuid4().hex
    tenant = request.meta.tenant_id
    idem_key = request.idempotency_key or request.meta.idempotency_key
    if idem_key and (owner := services.jobs.idempotent_owner(tenant, idem_key)):
        return _duplicate(services, owner)  # fast path: no input written for a known duplicate
    context = services.pointers.put_context(job_id, tenant, request.input)
    now = time.time()
    step = request.step or StepRef("", "", "", 0)
    meta = replace(request.meta, idempotency_key=idem_key)
    if request.dry_run:
        meta = replace(meta, labels={**meta.labels, DRY_RUN_LABEL: "true"})
    record = JobRecord(
        job_id=job_id,
        topic=request.topic,
        tenant_id=tenant,
        state=JobState.PENDING,
        trace_id=trace_id,
        context_ptr=context.uri,
        created_at=now,
        updated_at=now,
        meta=meta,
        requested_retries=-1 if request.max_retries is None else request.max_retries,
        requested_timeout_s=request.timeout_seconds or 0,
        run_id=step.run_id, workflow_id=step.workflow_id, step_id=step.step_id, step_attempt=step.attempt,
        step_item=step.item, dry_run=int(request.dry_run),
    )
    owner, created = services.jobs.create(record, idempotency_key=idem_key,
                                          window_s=services.settings.idempotency_window_s)
    if not created:  # a concurrent duplicate won the race; our ctx: copy expires with its TTL
        return _duplicate(services, owner)
    if not send:
        return SubmitReceipt(job_id, trace_id, created=True)
    try:
        packet = job_request_packet(record, sender_id=services.settings.sender_id)
        send_packet(services.app, DISPATCH_TASK, packet, queue=services.settings.control_queue)
    except Exception as exc:
        # The broker refused: end the job visibly rather than leave a PENDING ghost.
        services.jobs.transition(job_id, JobState.FAILED, note="broker_unavailable",
                                 error_code="broker_unavailable", error_message=str(exc))
        raise StoreError(f"could not hand job {job_id} to the scheduler: {exc}") from exc
    return SubmitReceipt(job_id, trace_id, created=True)


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


def _duplicate(services: Services, owner: str) -> SubmitReceipt:
    original = services.jobs.get(owner)
    return SubmitReceipt(original.job_id, original.trace_id, created=False)
