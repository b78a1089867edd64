"""Request and response bodies of ``/api/v1/policy``."""

from __future__ import annotations

import json
import math
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from coretex.gateway.resources.jobs.schemas import MAX_ITEMS, MAX_TEXT, TOPIC_PATTERN
from coretex.policy.request import PRIORITIES

MAX_BUNDLE_BYTES = 256 * 1024
"""Same bound as the config service's ``max_policy_bundle_bytes``."""
MAX_DRAFTS = 20
MAX_REQUESTS = 100
DECISIONS = ["allow", "deny", "require_approval", "allow_with_constraints", "throttle", "unspecified"]


def _finite(value: float) -> None:
    if not math.isfinite(value):
        raise ma.ValidationError("must be a finite number")


def _utf8(value: str) -> None:
    """Protobuf strings must be valid UTF-8: refuse lone surrogates before building the request."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except ValueError as exc:
        raise ma.ValidationError("must be valid Unicode (no lone surrogates)") from exc


def _text(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(max=MAX_TEXT), _utf8], **kwargs)


def _labels() -> fields.Dict:
    return fields.Dict(keys=_text(), values=_text(), validate=validate.Length(max=MAX_ITEMS),
                       metadata={"maxProperties": MAX_ITEMS})


# ---- requests -------------------------------------------------------------------------------------
class PolicyMetaSchema(ma.Schema):
    """The CAP ``JobMetadata`` facts policy matches on (the tenant is the top-level ``tenant``)."""

    actor_id = _text(metadata={"description": "Defaults to the API key's name"})
    actor_type = fields.String(validate=validate.OneOf(["human", "service"]))
    capability = _text()
    risk_tags = fields.List(_text(), validate=validate.Length(max=MAX_ITEMS))
    requires = fields.List(_text(), validate=validate.Length(max=MAX_ITEMS))
    pack_id = _text()
    labels = _labels()


class PolicyRequestSchema(ma.Schema):
    """A job as the kernel would see it, without submitting it."""

    topic = fields.String(required=True, validate=validate.Regexp(TOPIC_PATTERN))
    tenant = _text(metadata={"description": "Defaults to the API key's tenant; another tenant needs admin or secops"})
    job_id = _text(metadata={"description": "Reported in the decision, never matched on"})
    meta = fields.Nested(PolicyMetaSchema)
    labels = _labels()
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    estimated_cost = fields.Float(validate=[validate.Range(min=0), _finite])


class DraftBundleSchema(ma.Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=300),
                       metadata={"description": "Bundle id (e.g. secops/workflows); replaces the bundle of that id"})
    content = fields.String(required=True, validate=validate.Length(min=1, max=MAX_BUNDLE_BYTES),
                            metadata={"description": "Bundle YAML"})


class SimulateSchema(PolicyRequestSchema):
    bundles = fields.List(fields.Nested(DraftBundleSchema), validate=validate.Length(min=1, max=MAX_DRAFTS),
                          metadata={"description": "Draft bundles: evaluate in the gateway against the active "
                                                   "bundles with these replacing or joining them"})


class PutBundleSchema(ma.Schema):
    content = fields.String(required=True, validate=validate.Length(min=1, max=MAX_BUNDLE_BYTES))
    message = fields.String(load_default="", validate=validate.Length(max=4000))
    enabled = fields.Boolean(metadata={"description": "Omitted or false: store a draft (not in the snapshot) "
                                                      "until POST /policy/publish; false on a published bundle "
                                                      "withdraws it; true publishes it now (tested, signed, "
                                                      "audited). Omitted on a published bundle is 409."})


class BundleQuerySchema(ma.Schema):
    bundle_id = fields.String(validate=validate.Length(min=1, max=300),
                              metadata={"description": "The bundle id; use it instead of the path segment "
                                                       "(give '-' as the segment then)"})


class BundleSimulateSchema(ma.Schema):
    requests = fields.List(fields.Nested(PolicyRequestSchema), required=True,
                           validate=validate.Length(min=1, max=MAX_REQUESTS))
    content = fields.String(validate=validate.Length(min=1, max=MAX_BUNDLE_BYTES),
                            metadata={"description": "Unsaved content to try instead of the stored draft"})


class PublishSchema(ma.Schema):
    bundle_ids = fields.List(fields.String(validate=validate.Length(min=1, max=300)),
                             validate=validate.Length(min=1, max=MAX_DRAFTS),
                             metadata={"description": "Default: every disabled (draft) bundle"})
    message = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class RollbackSchema(ma.Schema):
    bundle_id = fields.String(required=True, validate=validate.Length(min=1, max=300))
    revision = fields.Integer(validate=validate.Range(min=1),
                              metadata={"description": "Restore the content this revision had; default: the "
                                                       "content before the current one"})
    message = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class PageQuerySchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    before = fields.String(validate=validate.Regexp(r"^\d+-\d+$"),
                           metadata={"description": "Stream id of the last record seen: page further back"})


class DecisionsQuerySchema(PageQuerySchema):
    tenant = _text(metadata={"description": "admin and secops only: one tenant's decisions (default: all)"})


class ImpactSchema(ma.Schema):
    bundles = fields.List(fields.Nested(DraftBundleSchema), required=True,
                          validate=validate.Length(min=1, max=MAX_DRAFTS))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000),
                           metadata={"description": "Replay this many of the newest audited requests"})
    sample = fields.Integer(load_default=5, validate=validate.Range(min=0, max=50))


# ---- responses ------------------------------------------------------------------------------------
class RemediationSchema(ma.Schema):
    id = fields.String(required=True)
    title = fields.String(required=True)
    summary = fields.String(required=True)
    replacement_topic = fields.String(required=True)
    replacement_capability = fields.String(required=True)
    add_labels = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    remove_labels = fields.List(fields.String(), required=True)


class PolicyDecisionSchema(ma.Schema):
    decision = fields.String(required=True, metadata={"enum": DECISIONS})
    rule_id = fields.String(required=True, metadata={"description": "Deciding rule; empty for the default decision"})
    matched_rules = fields.List(fields.String(), required=True,
                                metadata={"description": "Every rule that matched and took effect"})
    shadow_rules = fields.List(fields.String(), required=True)
    constraints = fields.Dict(required=True, metadata={"description": "Merged constraints (empty for deny)"})
    remediations = fields.List(fields.Nested(RemediationSchema), required=True)
    reason = fields.String(required=True)
    snapshot = fields.String(required=True, metadata={"description": "Policy snapshot id (v1:<hash>)"})
    approval_required = fields.Boolean(required=True)
    enforcement = fields.String(required=True, metadata={"description": "Of the deciding rule; empty if unknown"})
    warnings = fields.List(fields.String(), required=True)


class PolicyExplanationSchema(PolicyDecisionSchema):
    explanation = fields.String(required=True, metadata={"description": "Which rule decided, on which values"})


class PolicySimulationSchema(PolicyExplanationSchema):
    evaluated_by = fields.String(required=True, metadata={"enum": ["kernel", "gateway-draft"]})


class SnapshotsSchema(ma.Schema):
    active = fields.String(required=True)
    snapshots = fields.List(fields.String(), required=True)


class BundleSummarySchema(ma.Schema):
    bundle_id = fields.String(required=True)
    path_id = fields.String(required=True, metadata={"description": "The id with '/' as '~', for URLs"})
    sha256 = fields.String(required=True)
    author = fields.String(required=True)
    message = fields.String(required=True)
    created_at = fields.Float(required=True)
    updated_at = fields.Float(required=True)
    enabled = fields.Boolean(required=True, metadata={"description": "False: a draft, not in the snapshot"})
    revision = fields.Integer(required=True)


class BundleSchema(BundleSummarySchema):
    content = fields.String(required=True)


class OutcomeSchema(ma.Schema):
    decision = fields.String(required=True)
    rule_id = fields.String(required=True)
    reason = fields.String(required=True)


class RequestComparisonSchema(ma.Schema):
    index = fields.Integer(required=True)
    topic = fields.String(required=True)
    before = fields.Nested(OutcomeSchema, required=True)
    after = fields.Nested(OutcomeSchema, required=True)
    changed = fields.Boolean(required=True)


class BundleSimulationSchema(ma.Schema):
    bundle_id = fields.String(required=True)
    current_snapshot = fields.String(required=True)
    draft_snapshot = fields.String(required=True)
    changed = fields.Integer(required=True)
    results = fields.List(fields.Nested(RequestComparisonSchema), required=True)


class PolicyChangeSchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "Stream id; pass as before= to page"})
    change_id = fields.String(required=True)
    time = fields.Float(required=True)
    action = fields.String(required=True, metadata={"enum": ["publish", "rollback", "withdraw"]})
    actor = fields.String(required=True, metadata={"description": "API key name"})
    role = fields.String(required=True)
    message = fields.String(required=True)
    bundle_ids = fields.List(fields.String(), required=True)
    before_snapshot = fields.String(required=True)
    after_snapshot = fields.String(required=True)
    details = fields.Dict(required=True)


class DecisionRecordSchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "Stream id; pass as before= to page"})
    decision_id = fields.String(required=True)
    seq = fields.Integer(required=True)
    time = fields.Float(required=True)
    decision = fields.String(required=True)
    rule_id = fields.String(required=True)
    rule_ids = fields.List(fields.String(), required=True)
    snapshot = fields.String(required=True)
    constraints = fields.Dict(required=True)
    reason = fields.String(required=True)
    enforcement = fields.String(required=True)
    request_hash = fields.String(required=True)
    redacted = fields.Boolean(required=True, metadata={"description": "Secret-looking label values were redacted"})
    tenant = fields.String(required=True)
    actor = fields.String(required=True)
    job_id = fields.String(required=True)
    topic = fields.String(required=True)
    run_id = fields.String(required=True)
    step_id = fields.String(required=True)
    trace_id = fields.String(required=True)
    hash = fields.String(required=True)


class ImpactTransitionSchema(ma.Schema):
    transition = fields.String(required=True, metadata={"description": "e.g. ALLOW->DENY"})
    before = fields.String(required=True)
    after = fields.String(required=True)
    count = fields.Integer(required=True)
    sample_ids = fields.List(fields.String(), required=True, metadata={"description": "decision_id values"})


class ImpactReportSchema(ma.Schema):
    replayed = fields.Integer(required=True, metadata={"description": "Audited requests replayed"})
    current_snapshot = fields.String(required=True)
    draft_snapshot = fields.String(required=True)
    total = fields.Integer(required=True)
    unchanged = fields.Integer(required=True)
    changed = fields.Integer(required=True)
    rule_changed = fields.Integer(required=True)
    rule_changed_sample_ids = fields.List(fields.String(), required=True)
    transitions = fields.List(fields.Nested(ImpactTransitionSchema), required=True)


def page_args(data: dict[str, Any]) -> tuple[int, str | None]:
    return int(data["limit"]), data.get("before")
