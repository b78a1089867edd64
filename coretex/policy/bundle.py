"""Policy bundles: YAML text -> validated, frozen rules (and the bundle's own tests).

A bundle looks like::

    version: 1                       # positive integer, the author's revision of this bundle
    default_decision: deny           # allow | deny; optional, defaults to deny
    rules:
      - id: deny-destructive         # unique across every loaded bundle
        match:                       # every listed criterion must hold (see coretex.policy.match)
          topics: ["job.danger.*"]
        decision: deny               # allow | deny | require_approval | allow_with_constraints | throttle
        reason: destructive topics are blocked
        enforcement: soft            # hard (default) | soft | advisory | shadow (see Enforcement)
        remediations:                # deny rules only: safer alternatives sent with the decision
          - id: use-dry-run
            title: Run it as a dry run
            summary: the dry-run topic shows what would be deleted
            replacement_topic: job.danger.rm.dry-run
            replacement_capability: fs.read
            add_labels: {dry_run: "true"}
            remove_labels: [force]
      - id: constrain-repo-writes
        match: {topics: ["job.repo.*"]}
        decision: allow_with_constraints
        reason: repo writes run sandboxed
        constraints: {sandbox: {isolated: true}, diff: {max_files: 10}}   # see coretex.policy.constraints
    tests:                           # see coretex.policy.bundle_tests
      - name: rm is denied
        request: {topic: job.danger.rm}
        expect: deny
        expect_rule_id: deny-destructive

Parsing is strict: unknown keys, duplicate keys, wrong types, empty lists, duplicate rule ids and
``when`` expressions that do not compile are errors, and every :class:`~coretex.errors.PolicyError`
names the bundle, the rule (id and index) and the field. Further consistency checks: constraints
are not allowed on deny rules (nothing runs), ``allow_with_constraints`` needs constraints,
remediations and ``soft`` enforcement need a deny rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from coretex.errors import PolicyError
from coretex.policy._parsing import (
    Where,
    check_keys,
    choice,
    load_yaml,
    mapping,
    optional_string,
    string,
    string_list,
    string_map,
)
from coretex.policy.bundle_tests import BundleTest, parse_bundle_tests
from coretex.policy.constraints import NO_CONSTRAINTS, Constraints, parse_constraints
from coretex.policy.decision import (
    DEFAULT_DECISIONS,
    RULE_DECISIONS,
    DecisionKind,
    Enforcement,
    Remediation,
    parse_decision,
)
from coretex.policy.match import RuleMatch, parse_match

_BUNDLE_KEYS = frozenset({"version", "default_decision", "rules", "tests"})
_RULE_KEYS = frozenset({"id", "match", "decision", "reason", "constraints", "remediations", "enforcement"})
_REQUIRED_RULE_KEYS = ("decision", "id", "match", "reason")
_REMEDIATION_KEYS = frozenset(
    {"id", "title", "summary", "replacement_topic", "replacement_capability", "add_labels", "remove_labels"}
)
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class Rule:
    """One validated rule."""

    id: str
    match: RuleMatch
    decision: DecisionKind
    reason: str
    source: str
    """Name of the bundle the rule came from (for messages; not part of the snapshot hash)."""
    constraints: Constraints = NO_CONSTRAINTS
    remediations: tuple[Remediation, ...] = ()
    enforcement: Enforcement = Enforcement.HARD

    def canonical(self) -> dict[str, Any]:
        # Optional parts only when set, so snapshot ids of bundles that do not use them are unchanged.
        out: dict[str, Any] = {
            "id": self.id,
            "match": self.match.canonical(),
            "decision": self.decision.value,
            "reason": self.reason,
        }
        if not self.constraints.is_empty:
            out["constraints"] = self.constraints.canonical()
        if self.remediations:
            out["remediations"] = [r.canonical() for r in self.remediations]
        if self.enforcement is not Enforcement.HARD:
            out["enforcement"] = self.enforcement.value
        return out


@dataclass(frozen=True)
class Bundle:
    """One validated bundle."""

    name: str
    """Where it came from (a file path or any caller-chosen name)."""
    version: int
    default_decision: DecisionKind
    rules: tuple[Rule, ...]
    tests: tuple[BundleTest, ...] = ()

    def canonical(self) -> dict[str, Any]:
        """Content that decides, order-free: rule order, the bundle name and its tests do not count."""
        return {
            "version": self.version,
            "default_decision": self.default_decision.value,
            "rules": [rule.canonical() for rule in sorted(self.rules, key=lambda r: r.id)],
        }


def _parse_remediation(value: Any, where: Where, field: str) -> Remediation:
    data = mapping(value, where, field, _REMEDIATION_KEYS)
    for required in ("id", "title"):
        if required not in data:
            where.fail(f"{field}.{required}", "is required")
    return Remediation(
        id=string(data["id"], where, f"{field}.id"),
        title=string(data["title"], where, f"{field}.title"),
        summary=optional_string(data, "summary", where, f"{field}."),
        replacement_topic=optional_string(data, "replacement_topic", where, f"{field}."),
        replacement_capability=optional_string(data, "replacement_capability", where, f"{field}."),
        add_labels=string_map(data["add_labels"], where, f"{field}.add_labels") if "add_labels" in data else (),
        remove_labels=(
            string_list(data["remove_labels"], where, f"{field}.remove_labels") if "remove_labels" in data else ()
        ),
    )


def _parse_remediations(value: Any, where: Where) -> tuple[Remediation, ...]:
    if not isinstance(value, list) or not value:
        where.fail("remediations", f"must be a non-empty list of remediations, got {value!r}")
    remediations = tuple(_parse_remediation(item, where, f"remediations[{i}]") for i, item in enumerate(value))
    ids = [r.id for r in remediations]
    for i, rid in enumerate(ids):
        if rid in ids[:i]:
            where.fail(f"remediations[{i}].id", f"duplicate remediation id {rid!r}")
    return remediations


def _check_consistency(rule: Rule, data: dict[str, Any], where: Where) -> None:
    is_deny = rule.decision is DecisionKind.DENY
    if "constraints" in data and is_deny:
        where.fail("constraints", "a deny rule runs nothing, so constraints would never apply")
    if rule.decision is DecisionKind.ALLOW_WITH_CONSTRAINTS and rule.constraints.is_empty:
        where.fail("constraints", "is required with decision allow_with_constraints")
    if rule.remediations and not is_deny:
        where.fail("remediations", "are only offered by deny rules")
    if rule.enforcement is Enforcement.SOFT and not is_deny:
        where.fail("enforcement", "soft only applies to deny rules (it turns a deny into require_approval)")


def _parse_rule(value: Any, source: str, index: int) -> Rule:
    where = Where(source, "rules", index)
    if not isinstance(value, dict):
        where.fail("rules", f"each rule must be a mapping, got {value!r}")
    rule_id = value.get("id")
    if isinstance(rule_id, str) and rule_id:
        where.item(rule_id)
    check_keys(value, _RULE_KEYS, where, "")
    for required in _REQUIRED_RULE_KEYS:
        if required not in value:
            where.fail(required, "is required")
    rule_id = string(value["id"], where, "id")
    if not _RULE_ID_RE.match(rule_id):
        where.fail("id", f"must match {_RULE_ID_RE.pattern}, got {rule_id!r}")
    rule = Rule(
        id=rule_id,
        match=parse_match(value["match"], where),
        decision=parse_decision(value["decision"], RULE_DECISIONS, where, "decision"),
        reason=string(value["reason"], where, "reason").strip(),
        source=source,
        constraints=parse_constraints(value["constraints"], where) if "constraints" in value else NO_CONSTRAINTS,
        remediations=_parse_remediations(value["remediations"], where) if "remediations" in value else (),
        enforcement=(
            choice(value["enforcement"], Enforcement, where, "enforcement")
            if "enforcement" in value
            else Enforcement.HARD
        ),
    )
    _check_consistency(rule, value, where)
    return rule


def parse_bundle(name: str, text: str) -> Bundle:
    """Parse and validate one bundle; raise :class:`PolicyError` naming ``name``, rule and field."""
    where = Where(name)
    data = load_yaml(name, text)
    if not isinstance(data, dict):
        where.fail("<document>", f"must be a mapping with {', '.join(sorted(_BUNDLE_KEYS))}, got {data!r}")
    check_keys(data, _BUNDLE_KEYS, where, "")
    if "version" not in data:
        where.fail("version", "is required")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        where.fail("version", f"must be a positive integer, got {version!r}")
    default = parse_decision(data.get("default_decision", "deny"), DEFAULT_DECISIONS, where, "default_decision")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        where.fail("rules", f"must be a list of rules, got {raw_rules!r}")
    rules = tuple(_parse_rule(raw, name, i) for i, raw in enumerate(raw_rules))
    first_index: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in first_index:
            dup = Where(name, "rules", i)
            dup.item(rule.id)
            dup.fail("id", f"duplicate rule id (first used by rules[{first_index[rule.id]}])")
        first_index[rule.id] = i
    tests = parse_bundle_tests(data["tests"], name) if "tests" in data else ()
    return Bundle(name=name, version=version, default_decision=default, rules=rules, tests=tests)


def check_unique_rule_ids(bundles: Iterable[Bundle]) -> None:
    """Rule ids identify decisions, so they must be unique across every bundle of a snapshot."""
    owner: dict[str, str] = {}
    names: set[str] = set()
    for bundle in bundles:
        if bundle.name in names:
            raise PolicyError(f"policy bundle {bundle.name!r}: loaded twice (bundle names must be unique)")
        names.add(bundle.name)
        for index, rule in enumerate(bundle.rules):
            if rule.id in owner:
                where = Where(bundle.name, "rules", index)
                where.item(rule.id)
                where.fail("id", f"duplicate rule id (already defined in policy bundle {owner[rule.id]!r})")
            owner[rule.id] = bundle.name


def load_bundles(sources: Iterable[tuple[str, str]]) -> tuple[Bundle, ...]:
    """Parse ``(name, yaml_text)`` pairs; also reject rule ids reused across bundles."""
    bundles = tuple(parse_bundle(name, text) for name, text in sources)
    check_unique_rule_ids(bundles)
    return bundles
