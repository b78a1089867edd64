"""``/api/v1/approvals``: jobs parked by REQUIRE_APPROVAL, and their approval or rejection."""

from coretex.gateway.resources.approvals.routes import blp

__all__ = ["blp"]
