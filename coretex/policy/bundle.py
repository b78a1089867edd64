"""Policy bundles: YAML text -> validated, frozen rules.

A bundle looks like::

    version: 1                       # positive integer, the author's revision of this bundle
    default_decision: deny           # allow | deny; optional, defaults to deny
    rules:
      - id: deny-destructive         # unique across every loaded bundle
        match:                       # every listed criterion must hold (at least one is required)
          topics: ["job.danger.*"]   # fnmatch-style globs, case-sensitive; any one may match
          tenants: ["acme"]          # exact tenant ids; any one may match
        decision: deny               # allow | deny (the other decision kinds are not supported yet)
        reason: destructive topics are blocked

Parsing is strict: unknown keys, duplicate keys, wrong types, empty lists and duplicate rule ids
are errors, and every :class:`~coretex.errors.PolicyError` names the bundle, the rule (id and
index) and the field, so an operator can fix the file without guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml

from coretex.errors import PolicyError
from coretex.policy.decision import DecisionKind

_BUNDLE_KEYS = frozenset({"version", "default_decision", "rules"})
_RULE_KEYS = frozenset({"id", "match", "decision", "reason"})
_MATCH_KEYS = frozenset({"topics", "tenants"})
RULE_DECISIONS = (DecisionKind.ALLOW, DecisionKind.DENY)
"""Decision kinds a rule may use today."""
DEFAULT_DECISIONS = (DecisionKind.ALLOW, DecisionKind.DENY)
"""Values ``default_decision`` may take."""
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class RuleMatch:
    """The conditions of a rule. An empty tuple means "no condition on this field"."""

    topics: tuple[str, ...] = ()
    """Topic globs (fnmatchcase); the rule matches when any one matches the request topic."""
    tenants: tuple[str, ...] = ()
    """Exact tenant ids; the rule matches when the request tenant is one of them."""

    def canonical(self) -> dict[str, Any]:
        return {"topics": sorted(set(self.topics)), "tenants": sorted(set(self.tenants))}


@dataclass(frozen=True)
class Rule:
    """One validated rule."""

    id: str
    match: RuleMatch
    decision: DecisionKind
    reason: str
    source: str
    """Name of the bundle the rule came from (for messages; not part of the snapshot hash)."""

    def canonical(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "match": self.match.canonical(),
            "decision": self.decision.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Bundle:
    """One validated bundle."""

    name: str
    """Where it came from (a file path or any caller-chosen name)."""
    version: int
    default_decision: DecisionKind
    rules: tuple[Rule, ...]

    def canonical(self) -> dict[str, Any]:
        """Content only, order-free: rule order and the bundle name do not change the meaning."""
        return {
            "version": self.version,
            "default_decision": self.default_decision.value,
            "rules": [rule.canonical() for rule in sorted(self.rules, key=lambda r: r.id)],
        }


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the default constructor report it
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Where:
    """Names the place an error is about: bundle, rule (id and index) and field."""

    def __init__(self, source: str, index: int | None = None, rule_id: str | None = None) -> None:
        self.source, self.index, self.rule_id = source, index, rule_id

    def fail(self, field: str, problem: str) -> NoReturn:
        where = f"policy bundle {self.source!r}"
        if self.index is not None:
            rule = f"rules[{self.index}]"
            if self.rule_id is not None:
                rule += f" (id {self.rule_id!r})"
            where += f", {rule}"
        raise PolicyError(f"{where}, field {field!r}: {problem}")


def _check_keys(data: Mapping[Any, Any], allowed: frozenset[str], where: _Where, prefix: str) -> None:
    for key in data:
        if key not in allowed:
            field = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{key!r}"
            where.fail(field, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _string(value: Any, where: _Where, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        where.fail(field, f"must be a non-empty string, got {value!r}")
    return value


def _string_list(value: Any, where: _Where, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        where.fail(field, f"must be a non-empty list of strings, got {value!r}")
    return tuple(_string(item, where, f"{field}[{i}]") for i, item in enumerate(value))


def _decision(value: Any, allowed: tuple[DecisionKind, ...], where: _Where, field: str) -> DecisionKind:
    expected = ", ".join(kind.value for kind in allowed)
    if not isinstance(value, str):
        where.fail(field, f"must be one of {expected}, got {value!r}")
    try:
        kind = DecisionKind(value)
    except ValueError:
        where.fail(field, f"unknown decision {value!r} (expected one of {expected})")
    if kind not in allowed:
        where.fail(field, f"decision {value!r} is not supported yet (supported: {expected})")
    return kind


def _parse_match(value: Any, where: _Where) -> RuleMatch:
    if not isinstance(value, dict):
        where.fail("match", f"must be a mapping with {' and/or '.join(sorted(_MATCH_KEYS))}, got {value!r}")
    _check_keys(value, _MATCH_KEYS, where, "match.")
    if not value:
        where.fail("match", f"needs at least one of {', '.join(sorted(_MATCH_KEYS))}")
    topics = _string_list(value["topics"], where, "match.topics") if "topics" in value else ()
    tenants = _string_list(value["tenants"], where, "match.tenants") if "tenants" in value else ()
    return RuleMatch(topics=topics, tenants=tenants)


def _parse_rule(value: Any, source: str, index: int) -> Rule:
    where = _Where(source, index)
    if not isinstance(value, dict):
        where.fail("rules", f"each rule must be a mapping, got {value!r}")
    rule_id = value.get("id")
    if isinstance(rule_id, str) and rule_id:
        where.rule_id = rule_id
    _check_keys(value, _RULE_KEYS, where, "")
    for required in sorted(_RULE_KEYS):
        if required not in value:
            where.fail(required, "is required")
    rule_id = _string(value["id"], where, "id")
    if not _RULE_ID_RE.match(rule_id):
        where.fail("id", f"must match {_RULE_ID_RE.pattern}, got {rule_id!r}")
    return Rule(
        id=rule_id,
        match=_parse_match(value["match"], where),
        decision=_decision(value["decision"], RULE_DECISIONS, where, "decision"),
        reason=_string(value["reason"], where, "reason").strip(),
        source=source,
    )


def parse_bundle(name: str, text: str) -> Bundle:
    """Parse and validate one bundle; raise :class:`PolicyError` naming ``name``, rule and field."""
    where = _Where(name)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy bundle {name!r}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        where.fail("<document>", f"must be a mapping with {', '.join(sorted(_BUNDLE_KEYS))}, got {data!r}")
    _check_keys(data, _BUNDLE_KEYS, where, "")
    if "version" not in data:
        where.fail("version", "is required")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        where.fail("version", f"must be a positive integer, got {version!r}")
    default = _decision(data.get("default_decision", "deny"), DEFAULT_DECISIONS, where, "default_decision")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        where.fail("rules", f"must be a list of rules, got {raw_rules!r}")
    rules = tuple(_parse_rule(raw, name, i) for i, raw in enumerate(raw_rules))
    first_index: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in first_index:
            first = first_index[rule.id]
            _Where(name, i, rule.id).fail("id", f"duplicate rule id (first used by rules[{first}])")
        first_index[rule.id] = i
    return Bundle(name=name, version=version, default_decision=default, rules=rules)


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
                _Where(bundle.name, index, rule.id).fail(
                    "id", f"duplicate rule id (already defined in policy bundle {owner[rule.id]!r})"
                )
            owner[rule.id] = bundle.name


def load_bundles(sources: Iterable[tuple[str, str]]) -> tuple[Bundle, ...]:
    """Parse ``(name, yaml_text)`` pairs; also reject rule ids reused across bundles."""
    bundles = tuple(parse_bundle(name, text) for name, text in sources)
    check_unique_rule_ids(bundles)
    return bundles
