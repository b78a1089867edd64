"""What the policy engine answers: a decision kind, the rule that decided it, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DecisionKind(StrEnum):
    """Every outcome a policy can produce (the spelling used in bundles).

    Only ``allow`` and ``deny`` may be written in bundles today; the others exist so that the wire
    mapping and the combining order are already defined when constraints, approvals and
    throttling arrive.
    """

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    ALLOW_WITH_CONSTRAINTS = "allow_with_constraints"
    THROTTLE = "throttle"

    @property
    def permits_dispatch(self) -> bool:
        """True when a job with this decision may be dispatched now (possibly under constraints)."""
        return self in (DecisionKind.ALLOW, DecisionKind.ALLOW_WITH_CONSTRAINTS)


@dataclass(frozen=True)
class Decision:
    """The outcome of evaluating one request against one policy snapshot."""

    kind: DecisionKind
    """What the caller must do with the job."""
    rule_id: str
    """Id of the deciding rule; ``""`` when no rule matched and the default decision applied."""
    reason: str
    """Human-readable why, taken from the deciding rule (or naming the default)."""
    snapshot: str
    """Id of the policy snapshot that produced this decision (``v1:<sha256 prefix>``)."""
