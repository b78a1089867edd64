"""The compiled policy: a snapshot of bundles that answers requests with decisions.

Combining (independent of rule and bundle order):

1. Every rule whose conditions all hold is a *hit*.
2. The winning kind is the strictest hit kind: deny overrides everything, then
   require_approval, throttle, allow_with_constraints, allow (only allow and deny can be written
   in bundles today).
3. Among hits of the winning kind, the rule with the smallest id reports the decision, so the
   answer is deterministic.
4. No hit: the default decision, which is deny unless every bundle says allow.

Rules are indexed by the literal prefix of each topic glob (the text before the first ``*``,
``?`` or ``[``), so a request only looks at rules whose prefix is a prefix of its topic.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from coretex.policy.bundle import Bundle, Rule, check_unique_rule_ids, load_bundles
from coretex.policy.decision import Decision, DecisionKind
from coretex.policy.request import PolicyRequest

PRECEDENCE: tuple[DecisionKind, ...] = (
    DecisionKind.DENY,
    DecisionKind.REQUIRE_APPROVAL,
    DecisionKind.THROTTLE,
    DecisionKind.ALLOW_WITH_CONSTRAINTS,
    DecisionKind.ALLOW,
)
"""Strictest first: when rules of several kinds match, the earliest kind in this tuple wins."""
_GLOB_CHARS = "*?["


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard: every topic it matches starts with it."""
    cut = min((i for i in (pattern.find(c) for c in _GLOB_CHARS) if i >= 0), default=len(pattern))
    return pattern[:cut]


def snapshot_id_of(bundles: Iterable[Bundle]) -> str:
    """``v1:`` + the first 12 hex digits of sha256 over the canonical JSON of the bundles' content.

    Bundle names, bundle order and rule order do not count: the same content always gives the
    same id.
    """
    canon = sorted(json.dumps(b.canonical(), sort_keys=True, separators=(",", ":")) for b in bundles)
    merged = "[" + ",".join(canon) + "]"
    return "v1:" + hashlib.sha256(merged.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RuleHit:
    """One rule that matched a request, and the observed values that made it match."""

    rule: Rule
    topic_pattern: str | None
    """The glob that matched the topic (the smallest, if several); None if the rule has no topics."""
    tenant: str | None
    """The tenant that matched; None if the rule has no tenants."""

    def describe(self, request: PolicyRequest) -> str:
        parts = []
        if self.topic_pattern is not None:
            parts.append(f"topic {request.topic!r} matches {self.topic_pattern!r}")
        if self.tenant is not None:
            parts.append(f"tenant {request.tenant!r} is listed")
        return " and ".join(parts)


@dataclass(frozen=True)
class Explanation:
    """A decision together with every rule that matched (sorted by id)."""

    request: PolicyRequest
    decision: Decision
    hits: tuple[RuleHit, ...]

    def summary(self) -> str:
        """One human sentence: which rule decided, on which observed values, and what it overrode."""
        kind = self.decision.kind.value
        if not self.hits:
            tenant = f" (tenant {self.request.tenant!r})" if self.request.tenant else ""
            return f"{kind}: no rule matched topic {self.request.topic!r}{tenant}; default decision {kind}"
        winner = next(hit for hit in self.hits if hit.rule.id == self.decision.rule_id)
        text = (
            f"{kind} by rule {winner.rule.id!r} of {winner.rule.source!r}: "
            f"{winner.describe(self.request)}; reason: {winner.rule.reason}"
        )
        others = [f"{hit.rule.id} ({hit.rule.decision.value})" for hit in self.hits if hit is not winner]
        if others:
            text += f"; also matched: {', '.join(others)}"
        return text


class _TopicIndex:
    """Rules bucketed by the literal prefix of each of their topic globs."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._by_prefix: dict[str, list[tuple[str, Rule]]] = defaultdict(list)
        self._any_topic: list[Rule] = []
        for rule in rules:
            if not rule.match.topics:
                self._any_topic.append(rule)
            for pattern in rule.match.topics:
                self._by_prefix[literal_prefix(pattern)].append((pattern, rule))
        self._prefix_lengths = sorted({len(prefix) for prefix in self._by_prefix})

    def candidates(self, topic: str) -> Iterable[tuple[str | None, Rule]]:
        """(pattern, rule) pairs whose prefix fits ``topic``; the caller still checks the glob."""
        for rule in self._any_topic:
            yield None, rule
        for length in self._prefix_lengths:
            if length > len(topic):
                break
            yield from self._by_prefix.get(topic[:length], ())


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
        self._index = _TopicIndex(self.rules)

    @classmethod
    def from_sources(cls, sources: Iterable[tuple[str, str]]) -> PolicySet:
        """Parse ``(name, yaml_text)`` pairs and compile them (raises PolicyError)."""
        return cls(load_bundles(sources))

    def __repr__(self) -> str:
        counts = f"bundles={len(self.bundles)}, rules={len(self.rules)}"
        return f"PolicySet(snapshot_id={self.snapshot_id!r}, {counts})"

    def hits(self, request: PolicyRequest) -> tuple[RuleHit, ...]:
        """Every rule whose conditions all hold for ``request``, sorted by rule id."""
        matched: dict[str, tuple[Rule, list[str]]] = {}
        for pattern, rule in self._index.candidates(request.topic):
            if pattern is not None and not fnmatchcase(request.topic, pattern):
                continue
            if rule.match.tenants and request.tenant not in rule.match.tenants:
                continue
            patterns = matched.setdefault(rule.id, (rule, []))[1]
            if pattern is not None:
                patterns.append(pattern)
        hits = []
        for rule_id in sorted(matched):
            rule, patterns = matched[rule_id]
            hits.append(
                RuleHit(
                    rule=rule,
                    topic_pattern=min(patterns) if patterns else None,
                    tenant=request.tenant if rule.match.tenants else None,
                )
            )
        return tuple(hits)

    def explain(self, request: PolicyRequest) -> Explanation:
        """The decision for ``request`` plus every matching rule."""
        hits = self.hits(request)
        for kind in PRECEDENCE:
            winners = [hit for hit in hits if hit.rule.decision is kind]
            if winners:
                rule = winners[0].rule  # hits are sorted by id
                decision = Decision(kind=kind, rule_id=rule.id, reason=rule.reason, snapshot=self.snapshot_id)
                return Explanation(request=request, decision=decision, hits=hits)
        default = self.default_decision
        decision = Decision(
            kind=default,
            rule_id="",
            reason=f"no rule matched; default decision {default.value}",
            snapshot=self.snapshot_id,
        )
        return Explanation(request=request, decision=decision, hits=hits)

    def evaluate(self, request: PolicyRequest) -> Decision:
        """The decision for ``request`` (deny-overrides, order independent, deterministic)."""
        return self.explain(request).decision
