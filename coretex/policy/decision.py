"""What the policy engine answers: a decision kind, the rules behind it, constraints and remedies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coretex.policy._parsing import Where
from coretex.policy.constraints import NO_CONSTRAINTS, Constraints


class DecisionKind(StrEnum):
    """Every outcome a policy can produce (the spelling used in bundles)."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    ALLOW_WITH_CONSTRAINTS = "allow_with_constraints"
    THROTTLE = "throttle"

    @property
    def permits_dispatch(self) -> bool:
        """True when a job with this decision may be dispatched now (possibly under constraints)."""
        return self in (DecisionKind.ALLOW, DecisionKind.ALLOW_WITH_CONSTRAINTS)


RULE_DECISIONS: tuple[DecisionKind, ...] = tuple(DecisionKind)
"""Decision kinds a rule may use."""
DEFAULT_DECISIONS = (DecisionKind.ALLOW, DecisionKind.DENY)
"""Values ``default_decision`` may take."""


def parse_decision(value: Any, allowed: tuple[DecisionKind, ...], where: Where, field: str) -> DecisionKind:
    expected = ", ".join(kind.value for kind in allowed)
    if not isinstance(value, str):
        where.fail(field, f"must be one of {expected}, got {value!r}")
    try:
        kind = DecisionKind(value)
    except ValueError:
        where.fail(field, f"unknown decision {value!r} (expected one of {expected})")
    if kind not in allowed:
        where.fail(field, f"must be one of {expected}, got {value!r}")
    return kind


class Enforcement(StrEnum):
    """How hard a rule's decision is applied."""

    HARD = "hard"
    """The rule's decision, as written (the default)."""
    SOFT = "soft"
    """Deny rules only: a match asks for approval instead of denying."""
    ADVISORY = "advisory"
    """The match only warns: the rule counts as an allow and its constraints are not applied."""
    SHADOW = "shadow"
    """Evaluated and reported (``Decision.shadow_rule_ids``), never changes the decision."""


@dataclass(frozen=True, slots=True)
class Remediation:
    """A safer alternative offered with a deny. CAP: ``PolicyRemediation``."""

    id: str
    title: str
    summary: str = ""
    replacement_topic: str = ""
    """Topic to resubmit to instead."""
    replacement_capability: str = ""
    """Capability label to resubmit with instead."""
    add_labels: tuple[tuple[str, str], ...] = ()
    """Labels to add on resubmission, as sorted ``(key, value)`` pairs."""
    remove_labels: tuple[str, ...] = ()
    """Label keys to drop on resubmission."""

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "summary": self.summary,
            "replacement_topic": self.replacement_topic,
            "replacement_capability": self.replacement_capability,
            "add_labels": dict(self.add_labels),
            "remove_labels": list(self.remove_labels),
        }


@dataclass(frozen=True, slots=True)
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
    matched_rule_ids: tuple[str, ...] = ()
    """Every rule that matched and took effect (hard, soft or advisory), sorted."""
    shadow_rule_ids: tuple[str, ...] = ()
    """Shadow rules that matched: reported only, they did not change the decision."""
    constraints: Constraints = NO_CONSTRAINTS
    """Merged constraints of every effective match (empty for deny)."""
    remediations: tuple[Remediation, ...] = ()
    """Safer alternatives from matching deny rules (hard or soft), for deny and require_approval."""
    enforcement: Enforcement = Enforcement.HARD
    """Enforcement of the deciding rule (``hard`` for the default decision)."""
    warnings: tuple[str, ...] = ()
    """Advisory matches and ``when`` errors, one sentence each."""

    @property
    def approval_required(self) -> bool:
        return self.kind is DecisionKind.REQUIRE_APPROVAL
