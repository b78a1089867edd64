"""Request and response bodies of ``/api/v1/runs``."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from coretex.workflow.run import RunStatus, StepStatus

MAX_REASON = 1000
STREAM_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"


class RunListArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    before = fields.Float(validate=validate.Range(min=0), metadata={
        "description": "Only runs created before this time (epoch seconds): the `next_before` of the previous page"})


class TimelineArgsSchema(ma.Schema):
    after = fields.String(load_default="", validate=validate.Regexp(STREAM_ID_PATTERN), metadata={
        "description": "Only entries after this cursor: the `next_cursor` of the previous page"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class ErrorSchema(ma.Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


class TimerSchema(ma.Schema):
    id = fields.String(required=True)
    due = fields.DateTime(required=True)


class ItemsSummarySchema(ma.Schema):
    total = fields.Integer(required=True)
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                            metadata={"description": "Items per status (only statuses that occur)"})


class StepRunSchema(ma.Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.Enum(StepStatus, by_value=True, required=True)
    attempt = fields.Integer(required=True)
    job_id = fields.String(allow_none=True, metadata={"description": "The job of the current attempt"})
    output = fields.Raw(allow_none=True, metadata={"description": "null when only kept behind output_ptr (large)"})
    output_ptr = fields.String(allow_none=True)
    error = fields.Nested(ErrorSchema, allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "Why it waits, was skipped or is blocked"})
    decision = fields.String(allow_none=True)
    rule_id = fields.String(allow_none=True)
    approvals = fields.List(fields.Dict(), required=True, metadata={"description": "Approval decisions so far"})
    items = fields.Nested(ItemsSummarySchema, allow_none=True, metadata={"description": "for_each steps only"})
    reused_from = fields.String(allow_none=True, metadata={"description": "A rerun: the run whose output it reuses"})
    retry_at = fields.DateTime(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class RunSummarySchema(ma.Schema):
    run_id = fields.String(required=True)
    tenant = fields.String(required=True)
    workflow_id = fields.String(required=True)
    workflow_version = fields.Integer(required=True)
    status = fields.Enum(RunStatus, by_value=True, required=True)
    started_by = fields.String(required=True)
    dry_run = fields.Boolean(required=True)
    error = fields.Nested(ErrorSchema, allow_none=True)
    rerun_of = fields.String(allow_none=True)
    rerun_from = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)
    created_at_epoch = fields.Float(required=True, metadata={"description": "created_at in epoch seconds"})
    finished_at = fields.DateTime(allow_none=True)


class RunSchema(RunSummarySchema):
    trace_id = fields.String(required=True)
    idempotency_key = fields.String(allow_none=True)
    input = fields.Raw(allow_none=True)
    output = fields.Raw(allow_none=True, metadata={"description": "Built from the workflow's output templates"})
    started_at = fields.DateTime(allow_none=True)
    timers = fields.List(fields.Nested(TimerSchema), required=True, metadata={"description": "Active timers"})
    steps = fields.List(fields.Nested(StepRunSchema), required=True, metadata={"description": "In document order"})


class RunPageSchema(ma.Schema):
    runs = fields.List(fields.Nested(RunSummarySchema), required=True, metadata={"description": "Newest first"})
    next_before = fields.Float(allow_none=True, metadata={
        "description": "Pass as `before` for the next page; null when this page was the last"})


class TimelinePageSchema(ma.Schema):
    entries = fields.List(fields.Dict(), required=True, metadata={
        "description": "Oldest first; each has `id` (its cursor), `type` and `at`, and what the entry records"})
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "Pass as `after` for the next page; null when this page was the last"})


class CancelRunSchema(ma.Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))


class RerunSchema(ma.Schema):
    from_step = fields.String(load_default="", validate=validate.Length(max=64), metadata={
        "description": "Run this step and everything downstream again, reusing the other succeeded steps' "
                       "outputs; empty: every step runs again"})
    dry_run = fields.Boolean(load_default=None, allow_none=True,
                             metadata={"description": "Default: as the original run"})


class StepDecisionSchema(ma.Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON),
                           metadata={"description": "Why; recorded with the decision in the timeline"})


class RerunReceiptSchema(ma.Schema):
    run_id = fields.String(required=True, metadata={"description": "The new run"})
    rerun_of = fields.String(required=True)
