"""Save a workflow (a new immutable version when it changed), read it, start a run of it.

Workflows belong to the API key's tenant: another tenant's workflow is not found, for every role
(a run always starts in the caller's tenant). Saving needs ``admin`` or ``operator``: a workflow
decides which jobs run under the tenant's name, like a pack does. Starting a run needs a submit
role; the kernel is asked first (topic ``workflow.<id>``), and a refusal is 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView

from coretex.gateway.auth import ADMIN, OPERATOR, READ_ROLES, SUBMIT_ROLES, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import Problem, error_ref, problem_doc, violation_errors
from coretex.gateway.resources.workflows.schemas import (
    RunReceiptSchema,
    SavedWorkflowSchema,
    StartRunSchema,
    VersionArgsSchema,
    WorkflowDocumentSchema,
    WorkflowSchema,
    WorkflowSummarySchema,
    WorkflowVersionsSchema,
)
from coretex.gateway.validators import refuse_oversized_input
from coretex.model.schema import SchemaViolationError
from coretex.store.workflows import SavedWorkflow

AUTHOR_ROLES = frozenset({ADMIN, OPERATOR})

blp = Blueprint("workflows", __name__, url_prefix="/api/v1/workflows",
                description="Versioned workflow templates and starting their runs")


@blp.route("")
class Workflows(MethodView):
    @blp.arguments(WorkflowDocumentSchema)
    @blp.response(201, SavedWorkflowSchema, description="Saved as a new version")
    @blp.alt_response(200, schema=SavedWorkflowSchema,
                      description="Unchanged: the document equals the latest version, which is returned")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, response=error_ref(403))
    @blp.alt_response(413, response=error_ref(413))
    @blp.alt_response(422, **problem_doc("Invalid workflow: every problem in `errors`, by RFC 6901 pointer"))
    def post(self, document: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Check a workflow document (every problem at once) and save it as the next version."""
        principal = require_role(AUTHOR_ROLES)
        saved = current_services().engine.save_workflow(principal.tenant, document, saved_by=principal.name)
        return {**_workflow_view(saved), "created": saved.created}, 201 if saved.created else 200

    @blp.response(200, WorkflowSummarySchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    def get(self) -> list[dict[str, Any]]:
        """The caller's tenant's workflows at their latest version, last saved first."""
        principal = require_role(READ_ROLES)
        return [_summary_view(saved) for saved in current_services().engine.workflows.list(principal.tenant)]


@blp.route("/<workflow_id>")
class OneWorkflow(MethodView):
    @blp.arguments(VersionArgsSchema, location="query")
    @blp.response(200, WorkflowSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, args: dict[str, Any], workflow_id: str) -> dict[str, Any]:
        """One version of a workflow (default: the latest) with its document."""
        principal = require_role(READ_ROLES)
        saved = current_services().engine.workflows.get(principal.tenant, workflow_id, args.get("version"))
        return _workflow_view(saved)


@blp.route("/<workflow_id>/versions")
class WorkflowVersions(MethodView):
    @blp.response(200, WorkflowVersionsSchema)
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(404, response=error_ref(404))
    def get(self, workflow_id: str) -> dict[str, Any]:
        """The versions a workflow has (runs keep the version they started with)."""
        principal = require_role(READ_ROLES)
        versions = current_services().engine.workflows.versions(principal.tenant, workflow_id)
        return {"id": workflow_id, "versions": versions, "latest": versions[-1]}


@blp.route("/<workflow_id>/runs")
class WorkflowRuns(MethodView):
    @blp.arguments(StartRunSchema)
    @blp.response(201, RunReceiptSchema, description="A new run was created and started")
    @blp.alt_response(200, schema=RunReceiptSchema,
                      description="Duplicate: the idempotency key matched an earlier run of this tenant")
    @blp.alt_response(401, response=error_ref(401))
    @blp.alt_response(403, **problem_doc("The role may not start runs, or the kernel "
                                         "refused the run (type urn:coretex:problem:run_denied)"))
    @blp.alt_response(404, response=error_ref(404))
    @blp.alt_response(413, response=error_ref(413))
    @blp.alt_response(422, **problem_doc("The input does not match the workflow's input_schema: each JSON pointer "
                                         "(/input/...) in `errors`"))
    @blp.alt_response(429, **problem_doc("The tenant has its maximum of runs going"))
    @blp.alt_response(503, response=error_ref(503))
    def post(self, body: dict[str, Any], workflow_id: str) -> tuple[dict[str, Any], int]:
        """Start a run of a workflow (its latest version unless `version` is given)."""
        principal = require_role(SUBMIT_ROLES)
        services = current_services()
        refuse_oversized_input(body["input"], services.settings.max_input_bytes)
        try:
            receipt = services.engine.start(
                principal.tenant, workflow_id, body["input"], started_by=principal.name,
                actor_type=body["actor_type"], idempotency_key=body.get("idempotency_key", ""),
                dry_run=body["dry_run"], version=body.get("version"),
            )
        except SchemaViolationError as exc:  # name the pointers as they sit in this request body
            raise Problem(422, str(exc), code=exc.code, errors=violation_errors(exc, prefix="/input")) from exc
        return {"run_id": receipt.run_id, "duplicate": not receipt.created}, 201 if receipt.created else 200


def _workflow_view(saved: SavedWorkflow) -> dict[str, Any]:
    return {"id": saved.id, "tenant": saved.tenant, "version": saved.version, "saved_at": _time(saved.saved_at),
            "saved_by": saved.saved_by, "document": saved.document}


def _summary_view(saved: SavedWorkflow) -> dict[str, Any]:
    document = saved.document
    steps = document.get("steps")
    return {"id": saved.id, "version": saved.version, "name": document.get("name", ""),
            "description": document.get("description", ""),
            "steps": len(steps) if isinstance(steps, list | dict) else 0,
            "saved_at": _time(saved.saved_at), "saved_by": saved.saved_by}


def _time(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
