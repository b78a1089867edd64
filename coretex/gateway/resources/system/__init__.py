"""``/health`` (open) and ``/api/v1/status`` (authenticated)."""

from coretex.gateway.resources.system.routes import blp

__all__ = ["blp"]
