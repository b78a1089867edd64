"""List pending approvals of the caller's tenant; approve or reject a parked job.

Approving needs the admin or operator role; the job's own actor can never approve it. An
approval of a job whose request or policy changed since the decision is refused (409).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from flask.views import MethodView

from coretex.errors import NotFoundError
from coretex.gateway.auth import ADMIN, OPERATOR, READ_ROLES, Principal, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import error_ref
from coretex.gateway.resources.approvals.schemas import ApprovalDecisionSchema, ApprovalSchema
from coretex.model.approval import Approval
from coretex.scheduler.approvals import approve, reject
from coretex.services import Services

APPROVER_ROLES = frozenset({ADMIN, OPERATOR})

blp = Blueprint("approvals", __name__, url_prefix="/api/v1/approvals", description="Human approvals of jobs")


@blp.route("")
class PendingApprovals(MethodView):
    @blp.response(200, ApprovalSchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    def get(self) -> list[dict[str, Any]]:
        """Jobs of the caller's tenant waiting for a human decision, oldest first."""
        principal = require_role(READ_ROLES)
        return [_view(a) for a in current_services().approvals.pending(principal.tenant)]


@blp.route("/<job_id>")
class OneApproval(MethodView):
    @blp.response(200, ApprovalSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, job_id: str) -> dict[str, Any]:
        """The approval request of one job, pending or decided."""
        return _view(_readable(current_services(), job_id, require_role(READ_ROLES)))


@blp.route("/<job_id>/approve")
class Approve(MethodView):
    @blp.arguments(ApprovalDecisionSchema)
    @blp.response(200, ApprovalSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(409, response=error_ref(409))
    def post(self, body: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Approve a parked job; it re-enters the dispatch pipeline bound to this decision."""
        return _decide(approve, job_id, body["note"])


@blp.route("/<job_id>/reject")
class Reject(MethodView):
    @blp.arguments(ApprovalDecisionSchema)
    @blp.response(200, ApprovalSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(409, response=error_ref(409))
    def post(self, body: dict[str, Any], job_id: str) -> dict[str, Any]:
        """Reject a parked job: it ends DENIED with error_code approval_rejected (and a DLQ entry)."""
        return _decide(reject, job_id, body["note"])


def _decide(action: Callable[[Services, str, str, str], Approval], job_id: str, note: str) -> dict[str, Any]:
    principal = require_role(APPROVER_ROLES)
    services = current_services()
    _readable(services, job_id, principal)
    decided = action(services, job_id, principal.name, note)
    services.engine.job_changed(job_id)  # a workflow step parked on this job hears of it now
    return _view(decided)


def _readable(services: Services, job_id: str, principal: Principal) -> Approval:
    approval = services.approvals.get(job_id)  # NotFoundError -> 404
    if approval.tenant_id != principal.tenant:  # approvals never cross tenants, admin included
        raise NotFoundError(f"no approval for job {job_id}")
    return approval


def _view(approval: Approval) -> dict[str, Any]:
    view = asdict(approval)
    view["status"] = approval.status.value
    for name in ("decided_by", "note"):
        view[name] = view[name] or None
    view["decided_at"] = approval.decided_at or None
    return view
