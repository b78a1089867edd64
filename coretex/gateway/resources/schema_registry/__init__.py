"""``/api/v1/schemas``: the JSON Schema registry (register versions, read them)."""

from coretex.gateway.resources.schema_registry.routes import blp

__all__ = ["blp"]
