"""Conversions between our job records and CAP messages."""

from __future__ import annotations

from coretex.agent.v1 import buspacket_pb2, job_pb2, safety_pb2
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.protocol.envelope import new_packet

ATTEMPT_ENV = "coretex.attempt"
"""JobRequest.env key carrying the attempt number; the worker echoes it in its result."""
TIMEOUT_ENV = "coretex.timeout_s"
"""JobRequest.env key carrying the attempt's deadline in seconds."""
MAX_ARTIFACT_BYTES_ENV = "coretex.max_artifact_bytes"
"""JobRequest.env key: the policy's artifact size cap, honoured by the SDK's put_artifact."""
SANDBOX_ENV = "coretex.sandbox"
"""JobRequest.env key: the sandbox the policy demands (JSON); a worker with a looser profile refuses."""
REDACTION_LEVEL_ENV = "coretex.redaction_level"
"""JobRequest.env key: the least redaction the policy demands for what the job stores."""

RUN_ENV = "coretex.run_id"
"""JobRequest.env key: the workflow run a step's job belongs to (with ``coretex.step_id``)."""
STEP_ENV = "coretex.step_id"
DRY_RUN_LABEL = "dry_run"
"""Label of a dry-run job (``"true"``): policy can match it, and it never places a job anywhere."""
DRY_RUN_ENV = "coretex.dry_run"
"""JobRequest.env key: ``1`` tells the worker to simulate, with no external side effects."""

_ACTOR_TYPES = {
    "human": job_pb2.ACTOR_TYPE_HUMAN,
    "service": job_pb2.ACTOR_TYPE_SERVICE,
}

_STATUS_TO_STATE: dict[int, JobState] = {
    job_pb2.JOB_STATUS_SUCCEEDED: JobState.SUCCEEDED,
    job_pb2.JOB_STATUS_FAILED: JobState.FAILED,
    job_pb2.JOB_STATUS_CANCELLED: JobState.CANCELLED,
    job_pb2.JOB_STATUS_TIMEOUT: JobState.TIMEOUT,
    job_pb2.JOB_STATUS_RUNNING: JobState.RUNNING,
}


def meta_message(meta: JobMeta) -> job_pb2.JobMetadata:
    message = job_pb2.JobMetadata(
        tenant_id=meta.tenant_id,
        actor_id=meta.actor_id,
        actor_type=_ACTOR_TYPES.get(meta.actor_type, job_pb2.ACTOR_TYPE_UNSPECIFIED),
        idempotency_key=meta.idempotency_key,
        capability=meta.capability,
        risk_tags=list(meta.risk_tags),
        requires=list(meta.requires),
        pack_id=meta.pack_id,
    )
    message.labels.update(meta.labels)
    return message


def meta_from_message(meta: job_pb2.JobMetadata) -> JobMeta:
    return JobMeta(
        tenant_id=meta.tenant_id,
        actor_id=meta.actor_id,
        actor_type=job_pb2.ActorType.Name(meta.actor_type).removeprefix("ACTOR_TYPE_").lower(),
        idempotency_key=meta.idempotency_key,
        capability=meta.capability,
        risk_tags=tuple(meta.risk_tags),
        requires=tuple(meta.requires),
        pack_id=meta.pack_id,
        labels=dict(meta.labels),
    )


def job_request_packet(record: JobRecord, *, sender_id: str) -> buspacket_pb2.BusPacket:
    request = job_pb2.JobRequest(
        job_id=record.job_id,
        topic=record.topic,
        context_ptr=record.context_ptr,
        tenant_id=record.tenant_id,
        principal_id=record.meta.actor_id,
        meta=meta_message(record.meta),
        workflow_id=record.workflow_id,
    )
    request.labels.update(record.meta.labels)
    if record.run_id:
        request.env[RUN_ENV] = record.run_id
        request.env[STEP_ENV] = record.step_id
    if record.dry_run:
        request.env[DRY_RUN_ENV] = "1"
    return new_packet(sender_id=sender_id, trace_id=record.trace_id, job_request=request)


def policy_request(request: job_pb2.JobRequest) -> safety_pb2.PolicyCheckRequest:
    check = safety_pb2.PolicyCheckRequest(
        job_id=request.job_id,
        topic=request.topic,
        tenant=request.tenant_id or request.meta.tenant_id,
        priority=request.priority,
        principal_id=request.principal_id,
        memory_id=request.memory_id,
    )
    check.labels.update(request.labels)
    check.meta.CopyFrom(request.meta)
    if request.HasField("budget"):
        check.budget.CopyFrom(request.budget)
    return check


def state_of(status: int) -> JobState | None:
    """Our state for a JobResult status; None for statuses a worker may not report."""
    return _STATUS_TO_STATE.get(status)
