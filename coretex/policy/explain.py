"""Why a decision came out as it did: every rule considered, every condition with its observed value.

:meth:`PolicySet.explain` returns an :class:`Explanation`. It traces the rules the index offered
as candidates (a rule the index filtered out is "not a candidate (topic prefix)" and is only
counted), each with one :class:`~coretex.policy.match.CriterionCheck` per condition and the
``when`` result or error. :meth:`Explanation.summary` is one sentence (the gRPC Explain reason);
:meth:`Explanation.render` is the full trace for humans.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from coretex.policy.bundle import Rule
from coretex.policy.decision import Decision, DecisionKind, Enforcement
from coretex.policy.match import CriterionCheck
from coretex.policy.request import PolicyRequest


@dataclass(frozen=True)
class RuleTrace:
    """One candidate rule checked against the request."""

    rule: Rule
    checks: tuple[CriterionCheck, ...]
    """Structured conditions first, then ``when`` (if the rule has one)."""
    matched: bool
    """All conditions held (a ``when`` error counts as held for deny, require_approval and throttle rules)."""
    when_error: str = ""

    @property
    def label(self) -> str:
        """``id (decision)``, plus the enforcement when it is not hard."""
        enforcement = "" if self.rule.enforcement is Enforcement.HARD else f", {self.rule.enforcement.value}"
        return f"{self.rule.id} ({self.rule.decision.value}{enforcement})"

    def describe(self) -> str:
        """The conditions that held, as one phrase."""
        return " and ".join(check.detail for check in self.checks if check.matched) or "no conditions"


@dataclass(frozen=True)
class Explanation:
    """A decision, the rules considered for it, and how they combined."""

    request: PolicyRequest
    decision: Decision
    traces: tuple[RuleTrace, ...]
    """Every candidate rule, sorted by id."""
    total_rules: int
    """Rules in the snapshot; the ones not traced were not candidates."""
    index_key: Callable[[str], str]
    """Rule id -> what the index filed it under (``topic prefix``, ``tenant``, ...)."""

    @property
    def hits(self) -> tuple[RuleTrace, ...]:
        """Traces of the rules that matched (shadow ones included), sorted by id."""
        return tuple(trace for trace in self.traces if trace.matched)

    def trace_for(self, rule_id: str) -> RuleTrace | str:
        """The rule's trace, or why it was not considered (``not a candidate (topic prefix)``)."""
        for trace in self.traces:
            if trace.rule.id == rule_id:
                return trace
        return f"not a candidate ({self.index_key(rule_id) or 'index'})"

    def outcome_of(self, trace: RuleTrace) -> str:
        """What the rule did to the decision, in a few words."""
        decision = self.decision
        if not trace.matched:
            return "no match"
        if trace.rule.enforcement is Enforcement.SHADOW:
            return f"shadow: would {trace.rule.decision.value}, not applied"
        if trace.rule.id == decision.rule_id:
            return "decided"
        if trace.rule.enforcement is Enforcement.ADVISORY:
            return "advisory: warned only"
        return f"matched, outranked by {decision.rule_id!r}"

    def summary(self) -> str:
        """One human sentence: which rule decided, on which observed values, and what else mattered."""
        decision = self.decision
        kind = decision.kind.value
        by_id = {trace.rule.id: trace for trace in self.traces}
        if not decision.rule_id:
            tenant = f" (tenant {self.request.tenant!r})" if self.request.tenant else ""
            text = f"{kind}: no rule matched topic {self.request.topic!r}{tenant}; default decision {kind}"
        else:
            winner = by_id[decision.rule_id]
            how = ""
            if winner.rule.enforcement is not Enforcement.HARD:
                how = f" ({winner.rule.enforcement.value} {winner.rule.decision.value})"
            text = (
                f"{kind} by rule {winner.rule.id!r} of {winner.rule.source!r}{how}: "
                f"{winner.describe()}; reason: {winner.rule.reason}"
            )
        others = [by_id[rule_id].label for rule_id in decision.matched_rule_ids if rule_id != decision.rule_id]
        if others:
            text += f"; also matched: {', '.join(others)}"
        if decision.shadow_rule_ids:
            text += f"; shadow matches (not applied): {', '.join(by_id[r].label for r in decision.shadow_rule_ids)}"
        if decision.kind is not DecisionKind.DENY and not decision.constraints.is_empty:
            text += f"; constraints: {json.dumps(decision.constraints.canonical(), sort_keys=True)}"
        if decision.remediations:
            text += f"; remediations: {', '.join(r.id for r in decision.remediations)}"
        if decision.warnings:
            text += f"; warnings: {' | '.join(decision.warnings)}"
        return text

    def render(self) -> str:
        """The full trace, one line per rule and per condition."""
        lines = [
            f"decision: {self.decision.kind.value} (snapshot {self.decision.snapshot})",
            f"summary: {self.summary()}",
            f"considered {len(self.traces)} of {self.total_rules} rules; the others were not candidates of the index",
        ]
        for trace in self.traces:
            lines.append(f"  {trace.label} from {trace.rule.source!r}: {self.outcome_of(trace)}")
            for check in trace.checks:
                mark = "ok  " if check.matched else ("skip" if check.observed == "not evaluated" else "FAIL")
                lines.append(f"    {mark} {check.criterion}: {check.detail}")
        return "\n".join(lines)
