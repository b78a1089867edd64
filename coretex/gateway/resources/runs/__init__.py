"""``/api/v1/runs``: workflow runs: read them and their timeline, cancel, rerun, decide approval steps."""

from coretex.gateway.resources.runs.routes import blp

__all__ = ["blp"]
