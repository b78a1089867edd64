"""Request and response bodies of ``/api/v1/jobs``."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from coretex.gateway.validators import storable_json as _storable_json
from coretex.model.job import JobState

TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,199}$"
MAX_TEXT = 256
MAX_ITEMS = 64


def _max_entries(value: dict[str, str]) -> None:
    if len(value) > MAX_ITEMS:
        raise ma.ValidationError(f"at most {MAX_ITEMS} entries")


def _text(**kwargs: Any) -> fields.String:
    """A bounded string that can be stored as UTF-8."""
    return fields.String(validate=[validate.Length(max=MAX_TEXT), _storable_json], **kwargs)


class JobMetaSchema(ma.Schema):
    """CAP ``JobMetadata``. The tenant always comes from the API key; a different one is refused."""

    tenant_id = _text(metadata={"description": "Must equal the API key's tenant"})
    actor_id = _text(metadata={"description": "Defaults to the API key's name"})
    actor_type = fields.String(validate=validate.OneOf(["human", "service"]),
                               metadata={"description": "Defaults to service"})
    idempotency_key = _text()
    capability = _text()
    risk_tags = fields.List(_text(), validate=validate.Length(max=MAX_ITEMS))
    requires = fields.List(_text(), validate=validate.Length(max=MAX_ITEMS))
    pack_id = _text()
    labels = fields.Dict(keys=_text(), values=_text(), validate=_max_entries,
                         metadata={"maxProperties": MAX_ITEMS})


class SubmitJobSchema(ma.Schema):
    topic = fields.String(required=True, validate=validate.Regexp(TOPIC_PATTERN),
                          metadata={"description": "Job topic, e.g. job.echo"})
    input = fields.Raw(load_default=dict, validate=_storable_json,
                       metadata={"description": "Any JSON value except null; stored behind a ctx: pointer. "
                                                "Its canonical JSON must fit CORETEX_MAX_INPUT_BYTES (else 413)."})
    meta = fields.Nested(JobMetaSchema)
    idempotency_key = fields.String(validate=[validate.Length(min=1, max=MAX_TEXT), _storable_json],
                                    metadata={"description": "Same tenant + key within 24 h returns the first job"})
    max_retries = fields.Integer(validate=validate.Range(min=0, max=100), metadata={
        "description": "Retries for this job instead of its topic's (config timeouts); policy may lower it"})
    timeout_seconds = fields.Integer(validate=validate.Range(min=1, max=7 * 86400), metadata={
        "description": "Deadline of each attempt instead of its topic's; policy may lower it"})

    @ma.validates_schema
    def _one_idempotency_key(self, data: dict[str, Any], **_: Any) -> None:
        top = data.get("idempotency_key")
        inner = (data.get("meta") or {}).get("idempotency_key")
        if top and inner and top != inner:
            raise ma.ValidationError("differs from meta.idempotency_key", field_name="idempotency_key")


class SubmitReceiptSchema(ma.Schema):
    job_id = fields.String(required=True)
    trace_id = fields.String(required=True)
    duplicate = fields.Boolean(required=True,
                               metadata={"description": "True (status 200) when the idempotency key matched "
                                                        "an earlier job, whose ids are returned"})
    state = fields.String(required=True,
                          metadata={"description": "Where the job stood when the call returned: the pipeline runs "
                                                   "during the call, so usually DISPATCHED, DENIED, "
                                                   "APPROVAL_REQUIRED or FAILED (unroutable)"})


class JobSchema(ma.Schema):
    """A job as the API shows it; unset strings are null, ``result`` only for SUCCEEDED jobs."""

    job_id = fields.String(required=True)
    tenant_id = fields.String(required=True)
    topic = fields.String(required=True)
    state = fields.Enum(JobState, required=True)
    decision = fields.String(allow_none=True)
    rule_id = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    result_ptr = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True, metadata={"description": "The result JSON of a SUCCEEDED job, else null"})
    error_code = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    attempts = fields.Integer(required=True)
    trace_id = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    pool = fields.String(allow_none=True)
    progress = fields.Dict(allow_none=True, metadata={
        "description": "Last progress the handler reported: {percent, message}; null before any"})
    pending_reason = fields.String(allow_none=True, metadata={
        "description": "Why a job that has not ended is not running: '<code>: <detail>' "
                       "(awaiting_approval, retry_backoff, pool_overloaded)"})


class CancelSchema(ma.Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=1000))


class TransitionSchema(ma.Schema):
    from_ = fields.String(data_key="from", allow_none=True, metadata={"description": "null for the submission"})
    to = fields.String(required=True)
    at = fields.DateTime(required=True)
    reason = fields.String(required=True)


class RemediateSchema(ma.Schema):
    remediation_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT),
                                   metadata={"description": "Id of one of the remediations the policy offers"})


class RemediationReceiptSchema(ma.Schema):
    job_id = fields.String(required=True, metadata={"description": "The new job"})
    trace_id = fields.String(required=True)
    remediation_of = fields.String(required=True, metadata={"description": "The denied job it replaces"})
    remediation_id = fields.String(required=True)
    duplicate = fields.Boolean(required=True, metadata={"description": "True (status 200): this remediation of "
                                                                       "this job was submitted before (its ids)"})
    state = fields.String(required=True, metadata={"description": "Where the new job stood when the call returned "
                                                                   "(it passed the whole pipeline again)"})
