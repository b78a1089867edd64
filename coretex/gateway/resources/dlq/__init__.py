"""``/api/v1/dlq``: dead letters of the caller's tenant; retry them as new jobs or delete them."""

from coretex.gateway.resources.dlq.routes import blp

__all__ = ["blp"]
