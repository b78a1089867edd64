"""Bodies of ``/health`` and ``/api/v1/status``."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields


class HealthSchema(ma.Schema):
    status = fields.String(required=True, metadata={"description": "Always 'ok' (otherwise the answer is a 503)"})


class RedisComponentSchema(ma.Schema):
    ok = fields.Boolean(required=True)
    detail = fields.String(required=True, metadata={"description": "PONG, or the kind of failure"})


class KernelInstanceSchema(ma.Schema):
    kernel_id = fields.String(required=True)
    addr = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["READY", "DEGRADED", "NOT_READY"]})
    stage = fields.String(required=True, metadata={"description": "Failing reload stage when not READY"})
    message = fields.String(required=True)
    version = fields.Integer(required=True)
    snapshot_id = fields.String(required=True)
    policy_snapshot = fields.String(required=True)
    sources = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                          metadata={"description": "sha256 of every policy source"})
    loaded_at = fields.Float(required=True)
    verified_at = fields.Float(required=True)
    updated_at = fields.Float(required=True)
    dev_mode = fields.Boolean(required=True)


class KernelComponentSchema(ma.Schema):
    ok = fields.Boolean(required=True, metadata={"description": "The gRPC health check answered SERVING"})
    addr = fields.String(required=True)
    instances = fields.List(fields.Nested(KernelInstanceSchema), required=True,
                            metadata={"description": "Every live kernel's policy status (READY, DEGRADED ...)"})


class BeatComponentSchema(ma.Schema):
    ok = fields.Boolean(required=True, metadata={"description": "Beat ticked less than 10 s ago"})
    last_tick_age_s = fields.Float(required=True, allow_none=True,
                                   metadata={"description": "Seconds since the last tick; null if never seen"})


class ComponentsSchema(ma.Schema):
    redis = fields.Nested(RedisComponentSchema, required=True)
    kernel = fields.Nested(KernelComponentSchema, required=True)
    beat = fields.Nested(BeatComponentSchema, required=True)


class PoolSchema(ma.Schema):
    name = fields.String(required=True)
    capabilities = fields.List(fields.String(), required=True)
    queue = fields.String(required=True, metadata={"description": "The Celery queue of the pool's workers"})
    live_workers = fields.Integer(required=True, metadata={"description": "Workers with a recent heartbeat"})


class StatusSchema(ma.Schema):
    version = fields.String(required=True)
    namespace = fields.String(required=True)
    components = fields.Nested(ComponentsSchema, required=True)
    pools = fields.List(fields.Nested(PoolSchema), required=True)
