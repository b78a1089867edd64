"""Bodies of ``/api/v1/dlq``."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate


class DLQEntrySchema(ma.Schema):
    job_id = fields.String(required=True)
    topic = fields.String(required=True)
    tenant_id = fields.String(required=True)
    error_code = fields.String(required=True, metadata={"description": "no_pool_mapping, safety_denied, "
                               "max_retries_exceeded, timeout, approval_rejected, pool_overloaded, worker_lost, "
                               "or the worker's own code"})
    error_message = fields.String(required=True)
    last_state = fields.String(required=True, metadata={"description": "Where the job stood when it ended"})
    attempts = fields.Integer(required=True)
    created_at = fields.Float(required=True)


class DLQListArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class DLQRetrySchema(ma.Schema):
    job_id = fields.String(required=True, metadata={"description": "The new job, labelled retry_of=<old id>"})
    trace_id = fields.String(required=True)
    retry_of = fields.String(required=True)
