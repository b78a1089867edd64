"""Request and response bodies of ``/api/v1/workflows``.

The workflow document is checked by :func:`coretex.workflow.definition.parse_workflow`, which
reports every problem at once by RFC 6901 pointer; the fields below only document its main keys
(they accept any JSON, so that one check names every problem, not marshmallow first and the
engine after).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from coretex.gateway.validators import storable_json
from coretex.workflow.definition import ID_PATTERN, STEP_TYPES

MAX_TEXT = 256


def _documented(type_: str | list[str], description: str, **extra: Any) -> fields.Raw:
    """Any JSON (checked by the workflow parser), documented as ``type_`` in the OpenAPI document."""
    return fields.Raw(allow_none=True, metadata={"type": type_, "description": description, **extra})


class WorkflowDocumentSchema(ma.Schema):
    """A workflow document, as in a pack's ``workflows/*.yaml`` (sent as JSON)."""

    class Meta:
        unknown = ma.INCLUDE

    id = _documented("string", "Required. The workflow id", pattern=ID_PATTERN)
    name = _documented("string", "Display name")
    description = _documented("string", "What it does")
    input_schema = _documented(["object", "string"], "JSON Schema of the run input, inline or a registry id "
                                                     "('acme.input@2')")
    timeout_sec = _documented("number", "Deadline of the whole run")
    output = _documented(["object", "array", "string"], "Templates (${...}) that build the run's output")
    labels = _documented("object", "Labels (string values), seen by policy at run start")
    steps = _documented(["array", "object"], f"Required. A list of steps with ids, or a map id -> step; "
                                             f"step types: {', '.join(STEP_TYPES)}")

    @ma.validates_schema(pass_original=True)
    def _storable(self, _data: dict[str, Any], original: Any, **_: Any) -> None:
        storable_json(original)


class WorkflowSchema(ma.Schema):
    id = fields.String(required=True)
    tenant = fields.String(required=True)
    version = fields.Integer(required=True)
    saved_at = fields.DateTime(required=True)
    saved_by = fields.String(required=True)
    document = fields.Dict(required=True, metadata={"description": "The document as saved"})


class SavedWorkflowSchema(WorkflowSchema):
    created = fields.Boolean(required=True, metadata={
        "description": "False (status 200) when the document equalled the latest version, which is returned"})


class WorkflowSummarySchema(ma.Schema):
    id = fields.String(required=True)
    version = fields.Integer(required=True, metadata={"description": "The latest version"})
    name = fields.String(required=True)
    description = fields.String(required=True)
    steps = fields.Integer(required=True, metadata={"description": "How many steps the latest version has"})
    saved_at = fields.DateTime(required=True)
    saved_by = fields.String(required=True)


class VersionArgsSchema(ma.Schema):
    version = fields.Integer(validate=validate.Range(min=1), metadata={"description": "Default: the latest"})


class WorkflowVersionsSchema(ma.Schema):
    id = fields.String(required=True)
    versions = fields.List(fields.Integer(), required=True, metadata={"description": "Oldest first"})
    latest = fields.Integer(required=True)


class StartRunSchema(ma.Schema):
    input = fields.Raw(load_default=dict, validate=storable_json, metadata={
        "description": "The run input (JSON), checked against the workflow's input_schema (422 naming each "
                       "pointer). Its canonical JSON must fit CORETEX_MAX_INPUT_BYTES (else 413)."})
    idempotency_key = fields.String(validate=[validate.Length(min=1, max=MAX_TEXT), storable_json], metadata={
        "description": "Same tenant + key within the dedupe window returns the first run (status 200)"})
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "Control flow, kernel decisions and schema checks only: no real job runs"})
    version = fields.Integer(validate=validate.Range(min=1), metadata={
        "description": "Workflow version to run (default: the latest)"})
    actor_type = fields.String(load_default="human", validate=validate.OneOf(["human", "service"]),
                               metadata={"description": "Who starts it, as policy sees it (default human)"})


class RunReceiptSchema(ma.Schema):
    run_id = fields.String(required=True)
    duplicate = fields.Boolean(required=True, metadata={
        "description": "True (status 200) when the idempotency key matched an earlier run, whose id is returned"})
