"""``/api/v1/policy``: evaluate, explain and simulate; bundles, publish, rollback; decision and policy audits."""

from coretex.gateway.resources.policy.routes import blp

__all__ = ["blp"]
