"""List, read, retry and delete dead letters. Tenancy comes from the API key; another tenant's
entry is a 404 like an unknown one."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView

from coretex.errors import NotFoundError
from coretex.gateway.auth import ADMIN, OPERATOR, READ_ROLES, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import error_ref
from coretex.gateway.resources.dlq.schemas import DLQEntrySchema, DLQListArgsSchema, DLQRetrySchema
from coretex.model.dlq import DLQEntry
from coretex.scheduler.dlq_ops import retry_dead_letter
from coretex.services import Services

OPERATOR_ROLES = frozenset({ADMIN, OPERATOR})

blp = Blueprint("dlq", __name__, url_prefix="/api/v1/dlq", description="Dead-lettered jobs")


@blp.route("")
class DeadLetters(MethodView):
    @blp.arguments(DLQListArgsSchema, location="query")
    @blp.response(200, DLQEntrySchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Dead letters of the caller's tenant, newest first."""
        principal = require_role(READ_ROLES)
        return [asdict(e) for e in current_services().dlq.list(tenant_id=principal.tenant, limit=args["limit"])]


@blp.route("/<job_id>")
class DeadLetter(MethodView):
    @blp.response(200, DLQEntrySchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, job_id: str) -> dict[str, Any]:
        """One dead letter: why it failed, where it stood, after how many attempts."""
        return asdict(_entry(current_services(), job_id, require_role(READ_ROLES).tenant))

    @blp.response(204)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    def delete(self, job_id: str) -> None:
        """Delete a dead letter once it was dealt with (the job record itself stays)."""
        services = current_services()
        _entry(services, job_id, require_role(OPERATOR_ROLES).tenant)
        services.dlq.delete(job_id)


@blp.route("/<job_id>/retry")
class RetryDeadLetter(MethodView):
    @blp.response(202, DLQRetrySchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(404, response=error_ref(404))
    def post(self, job_id: str) -> dict[str, Any]:
        """Submit the dead job again as a new job (same topic, input, metadata) linked by ``retry_of``."""
        principal = require_role(OPERATOR_ROLES)
        receipt = retry_dead_letter(current_services(), job_id, principal.tenant, principal.name)
        return {"job_id": receipt.job_id, "trace_id": receipt.trace_id, "retry_of": job_id}


def _entry(services: Services, job_id: str, tenant: str) -> DLQEntry:
    entry = services.dlq.get(job_id)
    if entry.tenant_id != tenant:
        raise NotFoundError(f"no DLQ entry for job {job_id}")
    return entry
