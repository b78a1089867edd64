"""``/api/v1/workflows``: save versioned workflow templates, read them, start runs of them."""

from coretex.gateway.resources.workflows.routes import blp

__all__ = ["blp"]
