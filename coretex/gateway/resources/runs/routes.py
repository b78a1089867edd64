"""Read workflow runs and their timelines; cancel, rerun, approve or reject an approval step.

Tenancy comes from the API key only. Another tenant's run answers 404 exactly like an unknown id;
``admin`` reads (and, like jobs, cancels) every tenant's runs. A rerun starts a new run in the
caller's tenant and an approval never crosses tenants, so neither works on another tenant's run,
admin included.

Approving or rejecting a step needs an authenticated key whose role is one of the roles the step
lists (``approvers``); the approver is the key's name, so whoever started the run cannot approve
it unless the step allows it (separation of duties). Answers: 404 when the run has no approval
step of that id; 409 (``not_waiting``) when the step is not waiting for a decision (pending,
decided, or the run ended); 403 (``approval_refused``) with the reason for a role the step does not
list, separation of duties, or an approver deciding twice.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView

from coretex.errors import NotFoundError
from coretex.gateway.auth import READ_ROLES, SUBMIT_ROLES, Principal, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem, error_ref, problem_doc
from coretex.gateway.resources.runs.schemas import (
    CancelRunSchema,
    RerunReceiptSchema,
    RerunSchema,
    RunListArgsSchema,
    RunPageSchema,
    RunSchema,
    StepDecisionSchema,
    TimelineArgsSchema,
    TimelinePageSchema,
)
from coretex.services import Services
from coretex.workflow.run import Run, RunStatus, StepRun

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Workflow runs")


@blp.route("")
class Runs(MethodView):
    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    @blp.alt_response(401, response=error_ref(401))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Runs of the caller's tenant, newest first, a page at a time."""
        principal = require_role(READ_ROLES)
        engine = current_services().engine
        limit = args["limit"]
        stored = engine.runs.list(principal.tenant, limit=limit, before=args.get("before"))
        runs = [_summary_view(s.run_id, s.tenant, s.doc) for s in stored]
        next_before = runs[-1]["created_at_epoch"] if len(stored) == limit and runs else None
        return {"runs": runs, "next_before": next_before}


@blp.route("/<run_id>")
class OneRun(MethodView):
    @blp.response(200, RunSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, run_id: str) -> dict[str, Any]:
        """One run: its status, each step (status, attempt, job, output, error, approvals), timers, output."""
        return run_view(_readable_run(current_services(), run_id, require_role(READ_ROLES)))


@blp.route("/<run_id>/timeline")
class Timeline(MethodView):
    @blp.arguments(TimelineArgsSchema, location="query")
    @blp.response(200, TimelinePageSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, args: dict[str, Any], run_id: str) -> dict[str, Any]:
        """The run's timeline, oldest first: every transition, dispatch, decision, approval, result and error."""
        services = current_services()
        _readable_run(services, run_id, require_role(READ_ROLES))
        page = services.engine.runs.timeline(run_id, after=args["after"], limit=args["limit"])
        return {"entries": page.entries, "next_cursor": page.next_cursor or None}


@blp.route("/<run_id>/cancel")
class CancelRun(MethodView):
    @blp.arguments(CancelRunSchema)
    @blp.response(200, RunSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    def post(self, body: dict[str, Any], run_id: str) -> dict[str, Any]:
        """Cancel a run: its running jobs and timers are cancelled and it ends cancelled.

        A run that already ended keeps its status (the answer shows it).
        """
        principal = require_role(SUBMIT_ROLES)
        services = current_services()
        run = _readable_run(services, run_id, principal)
        return run_view(services.engine.cancel(run.tenant, run_id, by=principal.name, reason=body["reason"]))


@blp.route("/<run_id>/rerun")
class Rerun(MethodView):
    @blp.arguments(RerunSchema)
    @blp.response(201, RerunReceiptSchema, description="A new run, linked by rerun_of")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, **problem_doc("The role may not start runs, or the kernel "
                                         "refused the run (type urn:coretex:problem:run_denied)"))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(422, **problem_doc("from_step names no step of the workflow"))
    @blp.alt_response(429, **problem_doc("The tenant has its maximum of runs going"))
    @blp.alt_response(503, response=error_ref(503))
    def post(self, body: dict[str, Any], run_id: str) -> dict[str, Any]:
        """Run the same workflow version with the same input again, as a new run.

        With ``from_step``, succeeded steps outside its downstream keep their outputs; the step and
        everything after it run again, with fresh kernel decisions.
        """
        principal = require_role(SUBMIT_ROLES)
        engine = current_services().engine
        run = engine.get(principal.tenant, run_id)  # never across tenants: the new run is the caller's
        from_step = body["from_step"]
        if from_step and from_step not in run.workflow.steps:
            raise Problem(422, f"workflow {run.workflow.id} has no step {from_step!r}", code="validation_error",
                          errors={"from_step": [f"no step {from_step!r} in workflow {run.workflow.id}"]})
        receipt = engine.rerun(principal.tenant, run_id, started_by=principal.name, from_step=from_step,
                               dry_run=body["dry_run"])
        return {"run_id": receipt.run_id, "rerun_of": run_id}


@blp.route("/<run_id>/steps/<step_id>/approve")
class ApproveStep(MethodView):
    @blp.arguments(StepDecisionSchema)
    @blp.response(200, RunSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, **problem_doc("This approver may not decide the step; "
                                         "the detail says why"))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(409, **problem_doc("The step is not waiting for approval"))
    def post(self, body: dict[str, Any], run_id: str, step_id: str) -> dict[str, Any]:
        """Approve an approval step (one vote towards its quorum)."""
        return _decide(run_id, step_id, approve=True, reason=body["reason"])


@blp.route("/<run_id>/steps/<step_id>/reject")
class RejectStep(MethodView):
    @blp.arguments(StepDecisionSchema)
    @blp.response(200, RunSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, **problem_doc("This approver may not decide the step; "
                                         "the detail says why"))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(409, **problem_doc("The step is not waiting for approval"))
    def post(self, body: dict[str, Any], run_id: str, step_id: str) -> dict[str, Any]:
        """Reject an approval step: it fails (and with it the run, unless the step continues on failure)."""
        return _decide(run_id, step_id, approve=False, reason=body["reason"])


def _decide(run_id: str, step_id: str, *, approve: bool, reason: str) -> dict[str, Any]:
    principal = require_role(READ_ROLES)  # any key; the step's approver roles are checked by the engine
    engine = current_services().engine
    # approvals never cross tenants, admin included: 404 / 409 not_waiting / 403 come from the engine
    decided = engine.decide_approval(principal.tenant, run_id, step_id, approver=principal.name,
                                     roles=[principal.role], approve=approve, reason=reason)
    return run_view(decided)


def _readable_run(services: Services, run_id: str, principal: Principal) -> Run:
    stored = services.engine.runs.load(run_id)  # NotFoundError -> 404
    if not principal.can_read_tenant(stored.tenant):
        raise NotFoundError(f"run {run_id} not found")
    return services.engine.get(stored.tenant, run_id)


# ---- views ------------------------------------------------------------------------------------
def _summary_view(run_id: str, tenant: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A run as listed, from its stored document (no workflow needed)."""
    return {
        "run_id": run_id,
        "tenant": tenant,
        "workflow_id": doc["workflow_id"],
        "workflow_version": doc["workflow_version"],
        "status": RunStatus(doc["status"]),
        "started_by": doc.get("started_by", ""),
        "dry_run": bool(doc.get("dry_run")),
        "error": _error(doc.get("error_code", ""), doc.get("error_message", "")),
        "rerun_of": doc.get("rerun_of") or None,
        "rerun_from": doc.get("rerun_from") or None,
        "created_at": _time(doc["created_at"]),
        "created_at_epoch": doc["created_at"],
        "finished_at": _time_or_none(doc.get("finished_at", 0.0)),
    }


def run_view(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "tenant": run.tenant,
        "workflow_id": run.workflow.id,
        "workflow_version": run.workflow.version,
        "status": run.status,
        "started_by": run.started_by,
        "dry_run": run.dry_run,
        "trace_id": run.trace_id,
        "idempotency_key": run.idempotency_key or None,
        "input": run.input,
        "output": run.output,
        "error": _error(run.error_code, run.error_message),
        "rerun_of": run.rerun_of or None,
        "rerun_from": run.rerun_from or None,
        "created_at": _time(run.created_at),
        "created_at_epoch": run.created_at,
        "started_at": _time_or_none(run.started_at),
        "finished_at": _time_or_none(run.finished_at),
        "timers": [{"id": timer_id, "due": _time(due)}
                   for timer_id, due in sorted(run.timers.items(), key=lambda t: (t[1], t[0]))],
        "steps": [_step_view(step_id, run.workflow.steps[step_id].type, state)
                  for step_id, state in run.steps.items() if step_id in run.workflow.steps],
    }


def _step_view(step_id: str, step_type: str, state: StepRun) -> dict[str, Any]:
    items = None
    if state.items is not None:
        counts = Counter(item.status.value for item in state.items)
        items = {"total": len(state.items), "by_status": dict(sorted(counts.items()))}
    return {
        "id": step_id,
        "type": step_type,
        "status": state.status,
        "attempt": state.attempt,
        "job_id": state.job_id or None,
        "output": state.output,
        "output_ptr": state.output_ptr or None,
        "error": _error(state.error_code, state.error_message),
        "reason": state.reason or None,
        "decision": state.decision or None,
        "rule_id": state.rule_id or None,
        "approvals": state.approvals,
        "items": items,
        "reused_from": state.reused_from or None,
        "retry_at": _time_or_none(state.retry_at),
        "started_at": _time_or_none(state.started_at),
        "finished_at": _time_or_none(state.finished_at),
    }


def _error(code: str, message: str) -> dict[str, str] | None:
    return {"code": code, "message": message} if code or message else None


def _time(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _time_or_none(epoch_s: float) -> datetime | None:
    return _time(epoch_s) if epoch_s else None
