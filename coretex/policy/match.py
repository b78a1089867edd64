"""A rule's ``match``: the conditions, how they are parsed, and how each one is checked.

Every key that is present must hold (and at least one key is required)::

    match:
      topics: ["job.repo.*"]          # fnmatch-style globs, case-sensitive; any one may match
      tenants: [acme]                 # exact; any one may match (same for the next four keys)
      capabilities: [repo.write]
      pack_ids: [sre]
      actor_ids: [alice]
      actor_types: [human]            # human | service
      risk_tags: [prod, write]        # the job carries at least one of these
      requires: [git]                 # the job requires all of these
      labels: {env: prod}             # every key present with exactly this value
      secrets_present: true           # label secrets_present=true or risk tag "secrets"
      when: 'request.estimated_cost > 10.0'   # CEL, see coretex.policy.when; checked last

Each condition is compiled into a :class:`Criterion` whose :meth:`~Criterion.holds` is the hot
path of :meth:`PolicySet.evaluate` and whose :meth:`~Criterion.check` explains the same test
with the observed value (label values under secret-looking keys are redacted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Protocol

from coretex.policy._parsing import Where, boolean, mapping, string, string_list, string_map
from coretex.policy.request import PolicyRequest
from coretex.policy.when import WhenClause, WhenExpressionError

ACTOR_TYPES = ("human", "service")
MATCH_KEYS = frozenset(
    {
        "topics",
        "tenants",
        "capabilities",
        "risk_tags",
        "requires",
        "pack_ids",
        "actor_ids",
        "actor_types",
        "labels",
        "secrets_present",
        "when",
    }
)
_SECRET_KEY = re.compile(r"password|passwd|token|secret|key", re.IGNORECASE)
REDACTED = "<redacted>"
_GLOB_CHARS = "*?["


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard: every topic it matches starts with it."""
    cut = min((i for i in (pattern.find(c) for c in _GLOB_CHARS) if i >= 0), default=len(pattern))
    return pattern[:cut]


def shown_label(key: str, value: str | None) -> str:
    """How a label value appears in explanations: redacted when the key looks like a secret."""
    if value is None:
        return "absent"
    return REDACTED if _SECRET_KEY.search(key) else repr(value)


@dataclass(frozen=True)
class RuleMatch:
    """The conditions of a rule. An empty tuple (or None) means "no condition on this field"."""

    topics: tuple[str, ...] = ()
    """Topic globs (fnmatchcase); the rule matches when any one matches the request topic."""
    tenants: tuple[str, ...] = ()
    """Exact tenant ids; the rule matches when the request tenant is one of them."""
    capabilities: tuple[str, ...] = ()
    risk_tags: tuple[str, ...] = ()
    """Any one of these on the request is enough."""
    requires: tuple[str, ...] = ()
    """All of these must be among the request's ``requires``."""
    pack_ids: tuple[str, ...] = ()
    actor_ids: tuple[str, ...] = ()
    actor_types: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    """Sorted ``(key, value)`` pairs; every one must be on the request."""
    secrets_present: bool | None = None
    when: WhenClause | None = None

    def canonical(self) -> dict[str, Any]:
        # topics and tenants are always present so snapshot ids of older bundles do not change.
        out: dict[str, Any] = {"topics": sorted(set(self.topics)), "tenants": sorted(set(self.tenants))}
        for name in ("capabilities", "risk_tags", "requires", "pack_ids", "actor_ids", "actor_types"):
            if getattr(self, name):
                out[name] = sorted(set(getattr(self, name)))
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.secrets_present is not None:
            out["secrets_present"] = self.secrets_present
        if self.when is not None:
            out["when"] = self.when.source
        return out


def parse_match(value: Any, where: Where) -> RuleMatch:
    data = mapping(value, where, "match", MATCH_KEYS)
    lists = {
        key: string_list(data[key], where, f"match.{key}")
        for key in ("topics", "tenants", "capabilities", "risk_tags", "requires", "pack_ids", "actor_ids")
        if key in data
    }
    actor_types = string_list(data["actor_types"], where, "match.actor_types") if "actor_types" in data else ()
    for i, actor_type in enumerate(actor_types):
        if actor_type not in ACTOR_TYPES:
            where.fail(f"match.actor_types[{i}]", f"must be one of {', '.join(ACTOR_TYPES)}, got {actor_type!r}")
    when = None
    if "when" in data:
        source = string(data["when"], where, "match.when")
        try:
            when = WhenClause.compile(source)
        except WhenExpressionError as exc:
            where.fail("match.when", str(exc), WhenExpressionError)
    return RuleMatch(
        actor_types=actor_types,
        labels=string_map(data["labels"], where, "match.labels") if "labels" in data else (),
        secrets_present=boolean(data["secrets_present"], where, "match.secrets_present")
        if "secrets_present" in data
        else None,
        when=when,
        **lists,
    )


# --- compiled criteria ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CriterionCheck:
    """One condition of one rule, checked against one request (for explanations)."""

    criterion: str
    """``topics``, ``tenants``, ``labels.env``, ``when`` ..."""
    matched: bool
    observed: str
    """The request's value, as shown to humans (label values may be redacted)."""
    detail: str
    """One phrase: what was compared with what."""


class Criterion(Protocol):
    name: str

    def holds(self, request: PolicyRequest) -> bool: ...

    def check(self, request: PolicyRequest) -> CriterionCheck: ...


def _listing(values: tuple[str, ...] | frozenset[str]) -> str:
    return "[" + ", ".join(repr(v) for v in sorted(values)) + "]"


class _Topics:
    name = "topics"

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = tuple(sorted(set(patterns)))
        self._literals = frozenset(p for p in self.patterns if literal_prefix(p) == p)
        self._compiled = {p: re.compile(translate(p)).match for p in self.patterns if p not in self._literals}
        self._globs = tuple(self._compiled.values())

    def holds(self, request: PolicyRequest) -> bool:
        topic = request.topic
        return topic in self._literals or any(match(topic) for match in self._globs)

    def check(self, request: PolicyRequest) -> CriterionCheck:
        topic = request.topic
        hits = [p for p in self.patterns if (p == topic if p in self._literals else self._compiled[p](topic))]
        detail = (
            f"topic {topic!r} matches {hits[0]!r}"
            if hits
            else f"topic {topic!r} matches none of {_listing(self.patterns)}"
        )
        return CriterionCheck(self.name, bool(hits), repr(topic), detail)


class _OneOf:
    """The request's ``attr`` is one of ``values`` (tenants, capabilities, packs, actors)."""

    def __init__(self, name: str, attr: str, noun: str, values: tuple[str, ...]) -> None:
        self.name, self.attr, self.noun, self.values = name, attr, noun, frozenset(values)

    def holds(self, request: PolicyRequest) -> bool:
        return getattr(request, self.attr) in self.values

    def check(self, request: PolicyRequest) -> CriterionCheck:
        observed = getattr(request, self.attr)
        matched = observed in self.values
        relation = "is one of" if matched else "is not one of"
        return CriterionCheck(
            self.name, matched, repr(observed), f"{self.noun} {observed!r} {relation} {_listing(self.values)}"
        )


class _RiskTags:
    name = "risk_tags"

    def __init__(self, tags: tuple[str, ...]) -> None:
        self.tags = frozenset(tags)

    def holds(self, request: PolicyRequest) -> bool:
        return not self.tags.isdisjoint(request.risk_tags)

    def check(self, request: PolicyRequest) -> CriterionCheck:
        shared = sorted(self.tags.intersection(request.risk_tags))
        observed = _listing(tuple(request.risk_tags))
        detail = (
            f"risk tags {observed} include {shared[0]!r}"
            if shared
            else f"risk tags {observed} include none of {_listing(self.tags)}"
        )
        return CriterionCheck(self.name, bool(shared), observed, detail)


class _Requires:
    name = "requires"

    def __init__(self, needs: tuple[str, ...]) -> None:
        self.needs = frozenset(needs)

    def holds(self, request: PolicyRequest) -> bool:
        return self.needs.issubset(request.requires)

    def check(self, request: PolicyRequest) -> CriterionCheck:
        missing = sorted(self.needs.difference(request.requires))
        observed = _listing(tuple(request.requires))
        detail = (
            f"requires {observed} lack {_listing(tuple(missing))}"
            if missing
            else f"requires {observed} include all of {_listing(self.needs)}"
        )
        return CriterionCheck(self.name, not missing, observed, detail)


class _Label:
    def __init__(self, key: str, value: str) -> None:
        self.name, self.key, self.value = f"labels.{key}", key, value

    def holds(self, request: PolicyRequest) -> bool:
        return request.labels.get(self.key) == self.value

    def check(self, request: PolicyRequest) -> CriterionCheck:
        observed = request.labels.get(self.key)
        shown, wanted = shown_label(self.key, observed), shown_label(self.key, self.value)
        matched = observed == self.value
        detail = f"label {self.key} is {shown}" + ("" if matched else f", not {wanted}")
        return CriterionCheck(self.name, matched, shown, detail)


class _Secrets:
    name = "secrets_present"

    def __init__(self, expected: bool) -> None:
        self.expected = expected

    def holds(self, request: PolicyRequest) -> bool:
        return request.secrets_present is self.expected

    def check(self, request: PolicyRequest) -> CriterionCheck:
        observed = request.secrets_present
        matched = observed is self.expected
        detail = f"secrets present is {str(observed).lower()}" + (
            "" if matched else f", not {str(self.expected).lower()}"
        )
        return CriterionCheck(self.name, matched, str(observed).lower(), detail)


def compile_criteria(match: RuleMatch) -> tuple[Criterion, ...]:
    """The structured conditions of ``match``, cheapest first (``when`` is not among them)."""
    criteria: list[Criterion] = []
    for name, attr, noun in (
        ("tenants", "tenant", "tenant"),
        ("actor_types", "actor_type", "actor type"),
        ("capabilities", "capability", "capability"),
        ("pack_ids", "pack_id", "pack"),
        ("actor_ids", "actor_id", "actor"),
    ):
        if getattr(match, name):
            criteria.append(_OneOf(name, attr, noun, getattr(match, name)))
    if match.secrets_present is not None:
        criteria.append(_Secrets(match.secrets_present))
    if match.risk_tags:
        criteria.append(_RiskTags(match.risk_tags))
    if match.requires:
        criteria.append(_Requires(match.requires))
    criteria.extend(_Label(key, value) for key, value in match.labels)
    if match.topics:
        criteria.append(_Topics(match.topics))
    return tuple(criteria)
