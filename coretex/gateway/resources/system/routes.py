"""``GET /health`` (no auth, for load balancers) and ``GET /api/v1/status`` (any role)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView

from coretex import __version__
from coretex.errors import CoretexError
from coretex.gateway.auth import READ_ROLES, require_role
from coretex.gateway.blueprint import Blueprint
from coretex.gateway.context import current_services
from coretex.gateway.probes import ping_redis, probe_beat, probe_redis
from coretex.gateway.problems import error_ref
from coretex.gateway.resources.system.schemas import HealthSchema, StatusSchema
from coretex.kernel.status import read_kernel_statuses
from coretex.services import Services

blp = Blueprint("system", __name__, description="Health and status of the platform")


@blp.route("/health")
class Health(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, response=error_ref(503))
    def get(self) -> dict[str, str]:
        """Liveness for load balancers: 200 while Redis answers PING, else 503."""
        ping_redis(current_services())  # StoreError -> 503 problem
        return {"status": "ok"}


@blp.route("/api/v1/status")
class Status(MethodView):
    @blp.response(200, StatusSchema)
    @blp.alt_response(401, response=error_ref(401))
    def get(self) -> dict[str, Any]:
        """Redis, kernel and beat health, and the configured pools. Always 200: see each component's ok."""
        require_role(READ_ROLES)
        services = current_services()
        return {
            "version": __version__,
            "namespace": services.settings.namespace,
            "components": {
                "redis": asdict(probe_redis(services)),
                "kernel": {"ok": services.kernel.ready(), "addr": services.settings.kernel_addr,
                           "instances": _kernels(services)},
                "beat": asdict(probe_beat(services)),
            },
            "pools": _pools(services),
        }


def _kernels(services: Services) -> list[dict[str, Any]]:
    """Every live kernel's policy status (snapshot, per-source hashes, DEGRADED stage); none if unreadable."""
    try:
        return read_kernel_statuses(services.redis, services.settings)
    except CoretexError:
        return []


def _pools(services: Services) -> list[dict[str, Any]]:
    """The pools of the effective config; none while the store cannot be read (status still answers)."""
    try:
        pools = services.router.pools
        live = services.workers.live()
    except CoretexError:
        return []
    return [
        {"name": pool.name, "capabilities": sorted(pool.capabilities), "queue": services.settings.pool_queue(pool.name),
         "live_workers": sum(1 for beat in live if beat.pool == pool.name)}
        for pool in sorted(pools.values(), key=lambda p: p.name)
    ]
