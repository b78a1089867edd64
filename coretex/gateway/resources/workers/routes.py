"""Live workers and their pools, capabilities, load and capacity (from CAP Heartbeat packets)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields

from coretex.gateway.auth import READ_ROLES, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.problems import error_ref

blp = Blueprint("workers", __name__, url_prefix="/api/v1/workers", description="Live pack workers")


class WorkerSchema(ma.Schema):
    worker_id = fields.String(required=True)
    pool = fields.String(required=True)
    capabilities = fields.List(fields.String(), required=True)
    active_jobs = fields.Integer(required=True)
    max_parallel_jobs = fields.Integer(required=True)
    cpu_load = fields.Float(required=True, metadata={"description": "Percent of the host's cores, 0-100"})


class WorkerArgsSchema(ma.Schema):
    pool = fields.String(load_default=None)


@blp.route("")
class Workers(MethodView):
    @blp.arguments(WorkerArgsSchema, location="query")
    @blp.response(200, WorkerSchema(many=True))
    @blp.alt_response(401, response=error_ref(401))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Workers whose heartbeat arrived within the last three intervals, optionally of one pool."""
        require_role(READ_ROLES)
        return [
            {"worker_id": b.worker_id, "pool": b.pool, "capabilities": list(b.capabilities),
             "active_jobs": b.active_jobs, "max_parallel_jobs": b.max_parallel_jobs, "cpu_load": round(b.cpu_load, 1)}
            for b in current_services().workers.live(args["pool"])
        ]
