"""``/api/v1/jobs``: submit jobs, read them and their history."""

from coretex.gateway.resources.jobs.routes import blp

__all__ = ["blp"]
