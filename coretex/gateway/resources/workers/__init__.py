"""``/api/v1/workers``: live pack workers, from their CAP heartbeats."""

from coretex.gateway.resources.workers.routes import blp

__all__ = ["blp"]
