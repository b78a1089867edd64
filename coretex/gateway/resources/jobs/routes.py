"""Submit a job, read it, read its history, remediate a denied one. Tenancy comes from the API key only.

A job of another tenant answers 404 exactly like an unknown id, so ids cannot be probed; the
``admin`` role reads every tenant's jobs.

Remediation: a deny may come with safer alternatives (policy ``remediations``). ``POST
/jobs/{id}/remediate`` asks the kernel again for the denied job's request, picks the named
remediation from its answer and submits a *new* job with the remediation applied (replacement
topic or capability, labels added and removed) and the same input, labelled
``remediation_of=<old job id>`` and ``remediation_id=<id>``. The new job passes the whole
dispatch pipeline like any other; repeating the call returns the same new job (idempotency key
``remediation:<old job id>:<id>``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView

from coretex.agent.v1 import safety_pb2
from coretex.errors import NotFoundError
from coretex.gateway.auth import READ_ROLES, SUBMIT_ROLES, Principal, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem, error_ref
from coretex.gateway.resources.jobs.schemas import (
    CancelSchema,
    JobSchema,
    RemediateSchema,
    RemediationReceiptSchema,
    SubmitJobSchema,
    SubmitReceiptSchema,
    TransitionSchema,
)
from coretex.gateway.validators import refuse_oversized_input
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.cancel import cancel_job
from coretex.scheduler.packets import job_request_packet, policy_request
from coretex.scheduler.submit import SubmitRequest, submit_job
from coretex.services import Services

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="Submit and inspect jobs")


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(SubmitJobSchema)
    @blp.response(202, SubmitReceiptSchema, description="A new job was created")
    @blp.alt_response(200, schema=SubmitReceiptSchema,
                      description="Duplicate: the idempotency key matched an earlier job of this tenant")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(413, response=error_ref(413))
    @blp.alt_response(503, response=error_ref(503))
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Submit a job: it goes through the dispatch pipeline (policy check, routing) before the answer."""
        principal = require_role(SUBMIT_ROLES)
        services = current_services()
        refuse_oversized_input(body["input"], services.settings.max_input_bytes)
        receipt = submit_job(services, _submit_request(body, principal))
        status = 202 if receipt.created else 200
        return {"job_id": receipt.job_id, "trace_id": receipt.trace_id, "duplicate": not receipt.created,
                "state": receipt.state.value}, status


@blp.route("/<job_id>")
class Job(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, job_id: str) -> dict[str, Any]:
        """One job: state, policy decision, result (for SUCCEEDED jobs) or error."""
        services = current_services()
        record = _readable_job(services, job_id, require_role(READ_ROLES))
        return _job_view(services, record)


@blp.route("/<job_id>/history")
class JobHistory(MethodView):
    @blp.response(200, TransitionSchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, job_id: str) -> list[dict[str, Any]]:
        """The job's state transitions, oldest first (the first one is the submission)."""
        services = current_services()
        _readable_job(services, job_id, require_role(READ_ROLES))
        return [_transition_view(event) for event in services.jobs.history(job_id)]


@blp.route("/<job_id>/cancel")
class Cancel(MethodView):
    @blp.arguments(CancelSchema)
    @blp.response(200, JobSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    def post(self, body: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Cancel a job: at once in its record; a running handler is told within one heartbeat.

        A job that already ended keeps its state (the answer shows it). Cancelled jobs are never retried.
        """
        principal = require_role(SUBMIT_ROLES)
        services = current_services()
        record = _readable_job(services, job_id, principal)
        cancel_job(services, record.job_id, principal.name, body["reason"])
        services.engine.job_changed(record.job_id)  # a workflow step running this job hears of it now
        return _job_view(services, services.jobs.get(job_id))


@blp.route("/<job_id>/remediate")
class Remediate(MethodView):
    @blp.arguments(RemediateSchema)
    @blp.response(202, RemediationReceiptSchema, description="A new, remediated job was created")
    @blp.alt_response(200, schema=RemediationReceiptSchema,
                      description="Duplicate: this remediation of this job was submitted before")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(409, response=error_ref(409))
    @blp.alt_response(410, response=error_ref(410))
    @blp.alt_response(503, response=error_ref(503))
    def post(self, body: dict[str, Any], job_id: str) -> tuple[dict[str, Any], int]:
        """Resubmit a DENIED job of your tenant with one of the remediations its policy offers."""
        principal = require_role(SUBMIT_ROLES)
        services = current_services()
        record = services.jobs.get(job_id)  # NotFoundError -> 404
        if record.tenant_id != principal.tenant:  # remediation submits into the tenant: never across
            raise NotFoundError(f"job {job_id} not found")
        if record.state is not JobState.DENIED:
            raise Problem(409, f"job {job_id} is {record.state.value}; only DENIED jobs can be remediated",
                          code="not_denied")
        remediation = _offered_remediation(services, record, body["remediation_id"])
        try:
            payload = services.pointers.get_json(record.context_ptr, record.tenant_id)
        except NotFoundError as exc:
            raise Problem(410, f"the input of job {job_id} has expired; submit it again", code="input_expired") from exc
        receipt = submit_job(services, remediated_request(record, remediation, payload, principal))
        return {"job_id": receipt.job_id, "trace_id": receipt.trace_id, "remediation_of": job_id,
                "remediation_id": remediation.id, "duplicate": not receipt.created, "state": receipt.state.value}, \
            202 if receipt.created else 200


def _offered_remediation(services: Services, record: JobRecord, remediation_id: str) -> safety_pb2.PolicyRemediation:
    """The remediation the kernel offers *now* for the job's request (KernelUnavailableError -> 503)."""
    request = policy_request(job_request_packet(record, sender_id=services.settings.sender_id).job_request)
    offered = services.kernel.evaluate(request).response.remediations
    for remediation in offered:
        if remediation.id == remediation_id:
            return remediation
    names = ", ".join(repr(r.id) for r in offered) or "none"
    raise NotFoundError(f"the policy offers no remediation {remediation_id!r} for job {record.job_id} "
                        f"(offered: {names})")


def remediated_request(
    record: JobRecord, remediation: safety_pb2.PolicyRemediation, payload: Any, principal: Principal
) -> SubmitRequest:
    """The denied job with ``remediation`` applied, linked to it by labels, asked for by ``principal``."""
    labels = {k: v for k, v in record.meta.labels.items() if k not in set(remediation.remove_labels)}
    labels.update(remediation.add_labels)
    labels.update(remediation_of=record.job_id, remediation_id=remediation.id)
    idempotency_key = f"remediation:{record.job_id}:{remediation.id}"
    meta = replace(record.meta, actor_id=principal.name, idempotency_key=idempotency_key,
                   capability=remediation.replacement_capability or record.meta.capability, labels=labels)
    return SubmitRequest(remediation.replacement_topic or record.topic, payload, meta, idempotency_key)


def _submit_request(body: dict[str, Any], principal: Principal) -> SubmitRequest:
    meta: dict[str, Any] = body.get("meta") or {}
    tenant = meta.get("tenant_id", principal.tenant)
    if tenant != principal.tenant:
        raise Problem(403, f"meta.tenant_id {tenant!r} is not the tenant of this API key", code="tenant_mismatch")
    job_meta = JobMeta(
        tenant_id=principal.tenant,
        actor_id=meta.get("actor_id") or principal.name,
        actor_type=meta.get("actor_type", "service"),
        idempotency_key=meta.get("idempotency_key", ""),
        capability=meta.get("capability", ""),
        risk_tags=tuple(meta.get("risk_tags", ())),
        requires=tuple(meta.get("requires", ())),
        pack_id=meta.get("pack_id", ""),
        labels=dict(meta.get("labels", {})),
    )
    return SubmitRequest(body["topic"], body["input"], job_meta, body.get("idempotency_key", ""),
                         max_retries=body.get("max_retries"), timeout_seconds=body.get("timeout_seconds"))


def _readable_job(services: Services, job_id: str, principal: Principal) -> JobRecord:
    record = services.jobs.get(job_id)  # NotFoundError -> 404
    if not principal.can_read_tenant(record.tenant_id):
        raise NotFoundError(f"job {job_id} not found")
    return record


def _job_view(services: Services, record: JobRecord) -> dict[str, Any]:
    return {
        "job_id": record.job_id,
        "tenant_id": record.tenant_id,
        "topic": record.topic,
        "state": record.state,
        "decision": record.decision or None,
        "rule_id": record.rule_id or None,
        "reason": record.reason or None,
        "result_ptr": record.result_ptr or None,
        "result": _result(services, record),
        "error_code": record.error_code or None,
        "error_message": record.error_message or None,
        "attempts": record.attempts,
        "trace_id": record.trace_id,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        "pool": record.pool or None,
        "pending_reason": record.pending_reason or None,
        "progress": ({"percent": record.progress_pct, "message": record.progress_message}
                     if record.progress_pct or record.progress_message else None),
    }


def _result(services: Services, record: JobRecord) -> Any:
    if record.state is not JobState.SUCCEEDED or not record.result_ptr:
        return None
    try:
        return services.pointers.get_json(record.result_ptr, record.tenant_id)
    except NotFoundError:  # expired with its TTL: the record says where it was
        return None


def _transition_view(event: dict[str, str]) -> dict[str, Any]:
    return {
        "from_": event.get("from") or None,
        "to": event.get("to", ""),
        "at": _time(float(event.get("at") or 0.0)),
        "reason": event.get("reason", ""),
    }


def _time(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
