"""Tests that travel with a bundle, and the pure runner behind ``coretexctl policy test``.

A bundle may carry examples of the decisions it is meant to produce::

    tests:
      - name: rm is denied                      # optional, defaults to "tests[<index>]"; unique per bundle
        request:                                # PolicyRequest fields; only topic is required
          topic: job.danger.rm
          tenant: acme
          labels: {env: prod}
          risk_tags: [prod]
        expect: deny                            # the decision kind
        expect_rule_id: deny-destructive        # optional; "" expects the default decision

Tests run against the whole snapshot (every bundle together), because that is what decides in
production. :func:`bundle_test_report` also records which rules each test hit (effective and
shadow matches), so a CLI can show rules no test exercises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from coretex.policy._parsing import Where, mapping, string, string_list
from coretex.policy.decision import RULE_DECISIONS, Decision, DecisionKind, parse_decision
from coretex.policy.request import PRIORITIES, PolicyRequest

if TYPE_CHECKING:
    from coretex.policy.evaluator import PolicySet

_TEST_KEYS = frozenset({"name", "request", "expect", "expect_rule_id"})
_REQUEST_KEYS = frozenset(
    {
        "job_id",
        "topic",
        "tenant",
        "actor_id",
        "actor_type",
        "capability",
        "risk_tags",
        "requires",
        "pack_id",
        "labels",
        "priority",
        "estimated_cost",
    }
)
_REQUEST_STRINGS = ("job_id", "tenant", "actor_id", "actor_type", "capability", "pack_id")


@dataclass(frozen=True)
class BundleTest:
    """One expected decision."""

    bundle: str
    """Name of the bundle that holds the test."""
    index: int
    name: str
    request: PolicyRequest
    expect: DecisionKind
    expect_rule_id: str | None = None
    """Deciding rule expected; ``None`` = not checked, ``""`` = the default decision."""

    @property
    def label(self) -> str:
        return f"{self.bundle}: {self.name}"


@dataclass(frozen=True)
class TestFailure:
    """A bundle test whose decision differed from what it expected."""

    __test__ = False  # not a pytest test class, even when imported into a test module

    test: BundleTest
    actual: Decision
    message: str


@dataclass(frozen=True)
class BundleTestReport:
    """Every test's decision, the failures, and which rules the tests hit."""

    results: tuple[tuple[BundleTest, Decision], ...]
    failures: tuple[TestFailure, ...]
    rule_hits: Mapping[str, tuple[str, ...]]
    """Rule id -> labels (``bundle: name``) of the tests that matched it; every rule is a key."""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def uncovered_rule_ids(self) -> tuple[str, ...]:
        return tuple(rule_id for rule_id, tests in self.rule_hits.items() if not tests)

    @property
    def coverage(self) -> float:
        """Share of rules hit by at least one test (1.0 when there are no rules)."""
        total = len(self.rule_hits)
        return 1.0 if total == 0 else (total - len(self.uncovered_rule_ids)) / total


def _check(test: BundleTest, decision: Decision) -> TestFailure | None:
    problems = []
    if decision.kind is not test.expect:
        problems.append(f"expected {test.expect.value}, got {decision.kind.value}")
    if test.expect_rule_id is not None and decision.rule_id != test.expect_rule_id:
        expected = repr(test.expect_rule_id) if test.expect_rule_id else "the default decision"
        actual = repr(decision.rule_id) if decision.rule_id else "the default decision"
        problems.append(f"expected rule {expected}, got {actual}")
    if not problems:
        return None
    message = f"{test.label}: {'; '.join(problems)} (reason: {decision.reason})"
    return TestFailure(test=test, actual=decision, message=message)


def bundle_test_report(policy: PolicySet) -> BundleTestReport:
    """Run every bundle's tests against ``policy`` (pure: no I/O)."""
    results, failures = [], []
    hits: dict[str, list[str]] = {rule.id: [] for rule in policy.rules}
    for bundle in policy.bundles:
        for test in bundle.tests:
            decision = policy.evaluate(test.request)
            results.append((test, decision))
            for rule_id in (*decision.matched_rule_ids, *decision.shadow_rule_ids):
                hits[rule_id].append(test.label)
            failure = _check(test, decision)
            if failure is not None:
                failures.append(failure)
    return BundleTestReport(
        results=tuple(results),
        failures=tuple(failures),
        rule_hits=MappingProxyType({rule_id: tuple(labels) for rule_id, labels in sorted(hits.items())}),
    )


def run_bundle_tests(policy: PolicySet) -> list[TestFailure]:
    """The failing bundle tests of ``policy`` (empty when every test passes)."""
    return list(bundle_test_report(policy).failures)


# --- parsing ---------------------------------------------------------------------------------------


def _parse_request(value: Any, where: Where) -> PolicyRequest:
    data = mapping(value, where, "request", _REQUEST_KEYS)
    if "topic" not in data:
        where.fail("request.topic", "is required")
    if not isinstance(data["topic"], str):
        where.fail("request.topic", f"must be a string, got {data['topic']!r}")
    fields: dict[str, Any] = {"topic": data["topic"]}
    for key in _REQUEST_STRINGS:
        if key in data:
            fields[key] = string(data[key], where, f"request.{key}")
    for key in ("risk_tags", "requires"):
        if key in data:
            fields[key] = string_list(data[key], where, f"request.{key}", allow_empty=True)
    if "labels" in data:
        labels = data["labels"]
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            where.fail("request.labels", f"must be a mapping of strings to strings (quote true or 3), got {labels!r}")
        fields["labels"] = labels
    if "priority" in data:
        if data["priority"] not in PRIORITIES:
            where.fail("request.priority", f"must be one of {', '.join(PRIORITIES)}, got {data['priority']!r}")
        fields["priority"] = data["priority"]
    if "estimated_cost" in data:
        cost = data["estimated_cost"]
        if isinstance(cost, bool) or not isinstance(cost, int | float):
            where.fail("request.estimated_cost", f"must be a number, got {cost!r}")
        fields["estimated_cost"] = float(cost)
    return PolicyRequest(**fields)


def _parse_test(value: Any, source: str, index: int) -> BundleTest:
    where = Where(source, "tests", index)
    if not isinstance(value, dict):
        where.fail("tests", f"each test must be a mapping, got {value!r}")
    name = value.get("name")
    if isinstance(name, str) and name.strip():
        where.item(name)
    data = mapping(value, where, "<test>", _TEST_KEYS)
    for required in ("expect", "request"):
        if required not in data:
            where.fail(required, "is required")
    rule_id = data.get("expect_rule_id")
    if rule_id is not None and not isinstance(rule_id, str):
        where.fail("expect_rule_id", f"must be a string, got {rule_id!r}")
    return BundleTest(
        bundle=source,
        index=index,
        name=string(data["name"], where, "name").strip() if "name" in data else f"tests[{index}]",
        request=_parse_request(data["request"], where),
        expect=parse_decision(data["expect"], RULE_DECISIONS, where, "expect"),
        expect_rule_id=rule_id,
    )


def parse_bundle_tests(value: Any, source: str) -> tuple[BundleTest, ...]:
    if not isinstance(value, list):
        Where(source).fail("tests", f"must be a list of tests, got {value!r}")
    tests = tuple(_parse_test(item, source, i) for i, item in enumerate(value))
    seen: dict[str, int] = {}
    for test in tests:
        if test.name in seen:
            where = Where(source, "tests", test.index)
            where.item(test.name)
            where.fail("name", f"duplicate test name (first used by tests[{seen[test.name]}])")
        seen[test.name] = test.index
    return tests
