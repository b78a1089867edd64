"""Approve or reject jobs the policy parked with REQUIRE_APPROVAL.

An approval binds to the request hash and the policy snapshot of the decision that asked for it:
- the job's actor cannot approve their own job (separation of duties);
- if the request changed, approving is refused;
- if the policy changed since, the job is evaluated again under the new policy (it may be
  allowed, denied or parked for a fresh approval) and this approval is refused.
Approved jobs re-enter the dispatch pipeline, which lets them through the policy stage only while
request hash and snapshot still match.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from coretex.bus import DISPATCH_TASK, send_packet
from coretex.errors import CoretexError, IllegalTransitionError
from coretex.model.approval import Approval, ApprovalStatus, request_hash
from coretex.model.job import JobRecord, JobState
from coretex.scheduler.dead_letter import end_with_dead_letter
from coretex.scheduler.packets import job_request_packet, meta_from_message, policy_request
from coretex.scheduler.pipeline import Dispatch
from coretex.services import Services


class ApprovalRefusedError(CoretexError):
    """The approver may not approve this job (separation of duties)."""

    code = "approval_refused"


class ApprovalStaleError(CoretexError):
    """The request or the policy changed since the decision that asked for approval."""

    code = "approval_stale"


def dispatch_request_hash(services: Services, dispatch: Dispatch) -> str:
    record = dispatch.record
    meta = asdict(meta_from_message(dispatch.request.meta))
    meta["risk_tags"], meta["requires"] = sorted(meta["risk_tags"]), sorted(meta["requires"])
    return request_hash(record.topic, record.tenant_id, meta,
                        services.pointers.sha256(record.context_ptr, record.tenant_id))


def record_request_hash(services: Services, record: JobRecord) -> str:
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    return dispatch_request_hash(services, Dispatch(record=record, request=packet.job_request))


def is_approved(services: Services, dispatch: Dispatch) -> bool:
    """Whether a human approved this very request under the snapshot the kernel just used."""
    try:
        approval = services.approvals.get(dispatch.record.job_id)
    except CoretexError:
        return False
    return (
        approval.status is ApprovalStatus.APPROVED
        and approval.policy_snapshot == dispatch.policy_snapshot
        and approval.request_hash == dispatch_request_hash(services, dispatch)
    )


def park_for_approval(services: Services, dispatch: Dispatch) -> None:
    record = dispatch.record
    services.approvals.request(
        Approval(
            job_id=record.job_id,
            tenant_id=record.tenant_id,
            status=ApprovalStatus.PENDING,
            rule_id=dispatch.rule_id,
            reason=dispatch.reason,
            policy_snapshot=dispatch.policy_snapshot,
            request_hash=dispatch_request_hash(services, dispatch),
            requested_by=record.meta.actor_id,
            requested_at=time.time(),
        )
    )


def approve(services: Services, job_id: str, approver: str, note: str = "") -> Approval:
    record = _parked(services, job_id)
    approval = services.approvals.get(job_id)
    if approver and approver == approval.requested_by:
        raise ApprovalRefusedError(f"{approver} submitted job {job_id} and cannot approve it (separation of duties)")
    if record_request_hash(services, record) != approval.request_hash:
        raise ApprovalStaleError(f"job {job_id} changed since approval was requested; nothing was approved")
    current = services.kernel.check(
        policy_request(job_request_packet(record, sender_id=services.settings.sender_id).job_request)
    ).policy_snapshot
    if current != approval.policy_snapshot:
        _redispatch(services, record, note=f"policy changed from {approval.policy_snapshot} to {current}")
        raise ApprovalStaleError(
            f"the policy changed since approval was requested ({approval.policy_snapshot} -> {current}); "
            "the job is being evaluated again under the new policy"
        )
    decided = services.approvals.decide(job_id, record.tenant_id, ApprovalStatus.APPROVED, approver, note, time.time())
    _redispatch(services, record, note=f"approved by {approver}")
    return decided


def reject(services: Services, job_id: str, approver: str, note: str = "") -> Approval:
    record = _parked(services, job_id)
    decided = services.approvals.decide(job_id, record.tenant_id, ApprovalStatus.REJECTED, approver, note, time.time())
    message = f"rejected by {approver}" + (f": {note}" if note else "")
    end_with_dead_letter(services, record, JobState.DENIED, dlq_code="approval_rejected", dlq_message=message,
                         note=message, error_code="approval_rejected", error_message=message)
    return decided


def _parked(services: Services, job_id: str) -> JobRecord:
    record = services.jobs.get(job_id)
    if record.state is not JobState.APPROVAL_REQUIRED:
        raise IllegalTransitionError(f"job {job_id} is {record.state.value}, not awaiting approval")
    return record


def _redispatch(services: Services, record: JobRecord, *, note: str) -> None:
    services.jobs.transition(record.job_id, JobState.SCHEDULED, note=note)
    packet = job_request_packet(record, sender_id=services.settings.sender_id)
    send_packet(services.app, DISPATCH_TASK, packet, queue=services.settings.control_queue)
