"""Request and response bodies of ``/api/v1/approvals``."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate


class ApprovalDecisionSchema(ma.Schema):
    note = fields.String(load_default="", validate=validate.Length(max=1000),
                         metadata={"description": "Why; recorded with the decision and in the job history"})


class ApprovalSchema(ma.Schema):
    job_id = fields.String(required=True)
    tenant_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["pending", "approved", "rejected"]})
    rule_id = fields.String(required=True, metadata={"description": "The policy rule that asked for approval"})
    reason = fields.String(required=True)
    policy_snapshot = fields.String(required=True, metadata={"description": "Snapshot the approval is bound to"})
    request_hash = fields.String(required=True, metadata={"description": "sha256 of the request it is bound to"})
    requested_by = fields.String(required=True)
    requested_at = fields.Float(required=True)
    decided_by = fields.String(allow_none=True)
    decided_at = fields.Float(allow_none=True)
    note = fields.String(allow_none=True)
