"""The compiled policy: a snapshot of bundles that answers requests with decisions.

Matching: a rule matches when every condition of its ``match`` holds; its ``when`` (CEL) runs
only after the structured conditions held. A ``when`` that fails at run time fails CLOSED: a
deny, require_approval or throttle rule then matches, an allow or allow_with_constraints rule
does not; either way the decision carries a warning and the explanation shows the error.

Enforcement turns a match into an *effect*: ``hard`` = the rule's decision; ``soft`` (deny rules
only) = require_approval; ``advisory`` = allow, plus a warning, constraints not applied;
``shadow`` = no effect, the rule is only listed in ``Decision.shadow_rule_ids``.

Combining (independent of rule and bundle order):

1. The winning kind is the strictest effect: deny, then require_approval, then throttle, then
   allow_with_constraints, then allow (:data:`PRECEDENCE`). Throttle sits below
   require_approval because a job that needs a human must get that answer whatever the load,
   and above the allows because "not now" must hold back a job that would otherwise run.
2. Among effects of the winning kind, a hard rule reports the decision before an advisory one,
   then the smallest rule id wins, so the answer is deterministic.
3. Constraints of every effective hard or soft match merge to the most restrictive set (see
   :mod:`coretex.policy.constraints`); an allow that ends up with constraints is
   allow_with_constraints. A deny carries no constraints.
4. Remediations of every matching hard or soft deny rule go with deny and require_approval.
5. No effective match: the default decision, which is deny unless every bundle says allow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import replace

from coretex.policy.bundle import Bundle, Rule, check_unique_rule_ids, load_bundles
from coretex.policy.bundle_tests import BundleTest
from coretex.policy.constraints import NO_CONSTRAINTS, merge_all
from coretex.policy.decision import Decision, DecisionKind, Enforcement, Remediation
from coretex.policy.explain import Explanation, RuleTrace
from coretex.policy.index import RuleIndex
from coretex.policy.match import CriterionCheck, compile_criteria, literal_prefix
from coretex.policy.request import PolicyRequest
from coretex.policy.when import WhenResult, activation_of

__all__ = ["PRECEDENCE", "PolicySet", "literal_prefix", "snapshot_id_of"]

PRECEDENCE: tuple[DecisionKind, ...] = (
    DecisionKind.DENY,
    DecisionKind.REQUIRE_APPROVAL,
    DecisionKind.THROTTLE,
    DecisionKind.ALLOW_WITH_CONSTRAINTS,
    DecisionKind.ALLOW,
)
"""Strictest first: when rules of several kinds match, the earliest kind in this tuple wins."""
_RANK = {kind: i for i, kind in enumerate(PRECEDENCE)}
_FAILS_CLOSED_BY_MATCHING = frozenset({DecisionKind.DENY, DecisionKind.REQUIRE_APPROVAL, DecisionKind.THROTTLE})
_APPLIED = (Enforcement.HARD, Enforcement.SOFT)


def snapshot_id_of(bundles: Iterable[Bundle]) -> str:
    """``v1:`` + the first 12 hex digits of sha256 over the canonical JSON of the bundles' content.

    Bundle names, bundle order, rule order and bundle tests do not count: the same decisions
    always give the same id.
    """
    canon = sorted(json.dumps(b.canonical(), sort_keys=True, separators=(",", ":")) for b in bundles)
    merged = "[" + ",".join(canon) + "]"
    return "v1:" + hashlib.sha256(merged.encode("utf-8")).hexdigest()[:12]


def _effect(rule: Rule) -> DecisionKind | None:
    if rule.enforcement is Enforcement.SHADOW:
        return None
    if rule.enforcement is Enforcement.ADVISORY:
        return DecisionKind.ALLOW
    if rule.enforcement is Enforcement.SOFT:
        return DecisionKind.REQUIRE_APPROVAL
    return rule.decision


class _CompiledRule:
    """A rule ready for the hot path: its criteria, its effect and its rank."""

    __slots__ = ("rule", "criteria", "when", "effect", "rank", "sort_key", "fails_closed_by_matching", "solo")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.criteria = compile_criteria(rule.match)
        self.when = rule.match.when
        self.effect = _effect(rule)
        self.rank = _RANK[self.effect] if self.effect is not None else len(PRECEDENCE)
        self.sort_key = (rule.enforcement is Enforcement.ADVISORY, rule.id)
        self.fails_closed_by_matching = rule.decision in _FAILS_CLOSED_BY_MATCHING
        self.solo: Decision | None = None
        """The decision when this rule is the only match and nothing warned (precomputed)."""

    def when_warning(self, error: str) -> str:
        verdict = "matches" if self.fails_closed_by_matching else "does not match"
        return f"rule {self.rule.id!r}: when failed ({error}); fails closed: the rule {verdict}"

    def when_check(self, result: WhenResult | None) -> CriterionCheck:
        source = self.when.source if self.when is not None else ""
        if result is None:
            return CriterionCheck("when", False, "not evaluated", "when not evaluated (an earlier condition failed)")
        if result.error:
            verdict = "matches" if self.fails_closed_by_matching else "does not match"
            detail = f"when {source!r} failed: {result.error}; fails closed: the rule {verdict}"
            return CriterionCheck("when", self.fails_closed_by_matching, "error", detail)
        shown = "true" if result.value else "false"
        return CriterionCheck("when", bool(result.value), shown, f"when {source!r} is {shown}")


class PolicySet:
    """An immutable, compiled snapshot of one or more bundles."""

    def __init__(self, bundles: Sequence[Bundle]) -> None:
        check_unique_rule_ids(bundles)
        self.bundles: tuple[Bundle, ...] = tuple(bundles)
        all_rules = (rule for bundle in bundles for rule in bundle.rules)
        self.rules: tuple[Rule, ...] = tuple(sorted(all_rules, key=lambda r: r.id))
        # Deny unless every bundle says allow (an empty set denies everything).
        every_allows = bool(bundles) and all(b.default_decision is DecisionKind.ALLOW for b in bundles)
        self.default_decision = DecisionKind.ALLOW if every_allows else DecisionKind.DENY
        self.snapshot_id = snapshot_id_of(bundles)
        self._default = Decision(
            kind=self.default_decision,
            rule_id="",
            reason=f"no rule matched; default decision {self.default_decision.value}",
            snapshot=self.snapshot_id,
        )
        compiled = [_CompiledRule(rule) for rule in self.rules]
        for item in compiled:
            item.solo = self._combine([item], [])
        self._by_id = {item.rule.id: item for item in compiled}
        self._index: RuleIndex[_CompiledRule] = RuleIndex((item.rule, item) for item in compiled)

    @classmethod
    def from_sources(cls, sources: Iterable[tuple[str, str]]) -> PolicySet:
        """Parse ``(name, yaml_text)`` pairs and compile them (raises PolicyError)."""
        return cls(load_bundles(sources))

    def __repr__(self) -> str:
        counts = f"bundles={len(self.bundles)}, rules={len(self.rules)}"
        return f"PolicySet(snapshot_id={self.snapshot_id!r}, {counts})"

    @property
    def tests(self) -> tuple[BundleTest, ...]:
        """Every bundle's tests, in bundle order."""
        return tuple(test for bundle in self.bundles for test in bundle.tests)

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (KeyError when there is none)."""
        return self._by_id[rule_id].rule

    # --- deciding ---------------------------------------------------------------------------------

    def evaluate(self, request: PolicyRequest) -> Decision:
        """The decision for ``request`` (order independent, deterministic, never raises on CEL errors)."""
        matched: list[_CompiledRule] = []
        warnings: list[str] = []
        activation = None
        for item in self._index.candidates(request):
            for criterion in item.criteria:
                if not criterion.holds(request):
                    break
            else:
                if item.when is not None:
                    if activation is None:
                        activation = activation_of(request)
                    result = item.when.evaluate(activation)
                    if result.error:
                        warnings.append(item.when_warning(result.error))
                        if not item.fails_closed_by_matching:
                            continue
                    elif not result.value:
                        continue
                matched.append(item)
        return self._combine(matched, warnings)

    def explain(self, request: PolicyRequest) -> Explanation:
        """The decision for ``request`` with a trace of every candidate rule (see :mod:`.explain`)."""
        matched: list[_CompiledRule] = []
        warnings: list[str] = []
        traces = []
        activation = None
        for item in sorted(self._index.candidates(request), key=lambda c: c.rule.id):
            checks = [criterion.check(request) for criterion in item.criteria]
            holds = all(check.matched for check in checks)
            error = ""
            if item.when is not None:
                result = None
                if holds:
                    if activation is None:
                        activation = activation_of(request)
                    result = item.when.evaluate(activation)
                    error = result.error
                    if error:
                        warnings.append(item.when_warning(error))
                when_check = item.when_check(result)
                checks.append(when_check)
                holds = holds and when_check.matched
            if holds:
                matched.append(item)
            traces.append(RuleTrace(rule=item.rule, checks=tuple(checks), matched=holds, when_error=error))
        return Explanation(
            request=request,
            decision=self._combine(matched, warnings),
            traces=tuple(traces),
            total_rules=len(self.rules),
            index_key=self._index.key_of,
        )

    def _combine(self, matched: list[_CompiledRule], when_warnings: list[str]) -> Decision:
        if len(matched) == 1 and not when_warnings and matched[0].solo is not None:
            return matched[0].solo
        effective = [item for item in matched if item.effect is not None]
        shadow_ids = tuple(sorted(item.rule.id for item in matched if item.effect is None))
        advisories = [
            f"advisory rule {item.rule.id!r} would {item.rule.decision.value}: {item.rule.reason}"
            for item in effective
            if item.rule.enforcement is Enforcement.ADVISORY
        ]
        warnings = tuple(sorted(when_warnings)) + tuple(sorted(advisories))
        if not effective:
            if not shadow_ids and not warnings:
                return self._default
            return replace(self._default, shadow_rule_ids=shadow_ids, warnings=warnings)
        rank = min(item.rank for item in effective)
        winner = min((item for item in effective if item.rank == rank), key=lambda item: item.sort_key)
        kind = PRECEDENCE[rank]
        constraints = NO_CONSTRAINTS
        if kind is not DecisionKind.DENY:
            applied = (item.rule.constraints for item in effective if item.rule.enforcement in _APPLIED)
            constraints = merge_all(applied)
            if kind is DecisionKind.ALLOW and not constraints.is_empty:
                kind = DecisionKind.ALLOW_WITH_CONSTRAINTS
        remediations: tuple[Remediation, ...] = ()
        if kind in (DecisionKind.DENY, DecisionKind.REQUIRE_APPROVAL):
            deniers = sorted(
                (item.rule for item in effective if item.rule.decision is DecisionKind.DENY),
                key=lambda rule: rule.id,
            )
            remediations = tuple(r for rule in deniers if rule.enforcement in _APPLIED for r in rule.remediations)
        return Decision(
            kind=kind,
            rule_id=winner.rule.id,
            reason=winner.rule.reason,
            snapshot=self.snapshot_id,
            matched_rule_ids=tuple(sorted(item.rule.id for item in effective)),
            shadow_rule_ids=shadow_ids,
            constraints=constraints,
            remediations=remediations,
            enforcement=winner.rule.enforcement,
            warnings=warnings,
        )
