"""Bundles with the full rule model: validation messages, snapshot ids, and the bundle tests runner."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from coretex.errors import PolicyError
from coretex.policy import (
    DecisionKind,
    PolicyRequest,
    PolicySet,
    TestFailure,
    bundle_test_report,
    parse_bundle,
    run_bundle_tests,
)

GOOD = {"id": "r1", "match": {"topics": ["job.*"]}, "decision": "deny", "reason": "ok"}


def bundle_with(**rule_changes: Any) -> str:
    changed = {k: v for k, v in (GOOD | rule_changes).items() if v is not None}
    return yaml.safe_dump({"version": 1, "rules": [GOOD | {"id": "r0"}, changed]})


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (bundle_with(match={"topics": ["job.*"], "capability": ["x"]}), "match.capability", "unknown key"),
        (bundle_with(match={"capabilities": "x"}), "match.capabilities", "non-empty list"),
        (bundle_with(match={"pack_ids": []}), "match.pack_ids", "non-empty list"),
        (bundle_with(match={"actor_ids": [1]}), "match.actor_ids[0]", "non-empty string"),
        (bundle_with(match={"actor_types": ["robot"]}), "match.actor_types[0]", "human, service"),
        (bundle_with(match={"risk_tags": [""]}), "match.risk_tags[0]", "non-empty string"),
        (bundle_with(match={"requires": None}), "match.requires", "non-empty list"),
        (bundle_with(match={"labels": {"dry_run": True}}), "match.labels.dry_run", "quote"),
        (bundle_with(match={"labels": ["env=prod"]}), "match.labels", "mapping of strings"),
        (bundle_with(match={"labels": {}}), "match.labels", "non-empty mapping"),
        (bundle_with(match={"secrets_present": "yes"}), "match.secrets_present", "true or false"),
        (bundle_with(match={"when": ""}), "match.when", "non-empty string"),
        (bundle_with(match={"when": "request.topic =="}), "match.when", "line 1, column"),
        (bundle_with(enforcement="strict"), "enforcement", "hard, soft, advisory, shadow"),
        (bundle_with(decision="allow", enforcement="soft"), "enforcement", "only applies to deny"),
        (bundle_with(constraints={"tools": ["git"]}), "constraints", "deny rule runs nothing"),
        (bundle_with(decision="allow_with_constraints"), "constraints", "is required"),
        (
            bundle_with(decision="allow", remediations=[{"id": "x", "title": "t"}]),
            "remediations",
            "only offered by deny",
        ),
        (bundle_with(remediations=[]), "remediations", "non-empty list"),
        (bundle_with(remediations=[{"title": "t"}]), "remediations[0].id", "is required"),
        (bundle_with(remediations=[{"id": "x"}]), "remediations[0].title", "is required"),
        (bundle_with(remediations=[{"id": "x", "title": "t", "colour": 1}]), "remediations[0].colour", "unknown key"),
        (
            bundle_with(remediations=[{"id": "x", "title": "t"}, {"id": "x", "title": "u"}]),
            "remediations[1].id",
            "duplicate remediation id",
        ),
        (
            bundle_with(remediations=[{"id": "x", "title": "t", "add_labels": {"a": 1}}]),
            "remediations[0].add_labels.a",
            "string",
        ),
        (
            bundle_with(remediations=[{"id": "x", "title": "t", "remove_labels": "a"}]),
            "remediations[0].remove_labels",
            "list",
        ),
        (bundle_with(remediations=[{"id": "x", "title": "t", "summary": ""}]), "remediations[0].summary", "non-empty"),
    ],
)
def test_bad_rules_name_file_rule_and_field(text: str, field: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_bundle("secops/prod.yaml", text)
    message = str(info.value)
    assert "'secops/prod.yaml'" in message and "rules[1] (id 'r1')" in message, message
    assert f"field {field!r}" in message and problem in message, message


def bundle_with_tests(tests: Any) -> str:
    return yaml.safe_dump({"version": 1, "rules": [GOOD], "tests": tests})


@pytest.mark.parametrize(
    ("tests", "where", "problem"),
    [
        ("all", "field 'tests'", "must be a list"),
        (["x"], "tests[0], field 'tests'", "must be a mapping"),
        ([{"name": "t", "expect": "deny"}], "tests[0] (name 't'), field 'request'", "is required"),
        ([{"request": {"topic": "x"}}], "tests[0], field 'expect'", "is required"),
        ([{"request": {"topic": "x"}, "expect": "maybe"}], "tests[0], field 'expect'", "unknown decision"),
        ([{"request": {"topic": "x"}, "expect": "deny", "why": 1}], "field '<test>.why'", "unknown key"),
        ([{"request": {"tenant": "a"}, "expect": "deny"}], "field 'request.topic'", "is required"),
        ([{"request": {"topic": "x", "tennant": "a"}, "expect": "deny"}], "field 'request.tennant'", "unknown key"),
        ([{"request": {"topic": "x", "labels": {"a": 1}}, "expect": "deny"}], "field 'request.labels'", "quote"),
        ([{"request": {"topic": "x", "priority": "urgent"}, "expect": "deny"}], "field 'request.priority'", "critical"),
        ([{"request": {"topic": "x", "estimated_cost": "1"}, "expect": "deny"}], "'request.estimated_cost'", "number"),
        ([{"request": {"topic": "x"}, "expect": "deny", "expect_rule_id": 3}], "field 'expect_rule_id'", "string"),
        (
            [{"name": "t", "request": {"topic": "x"}, "expect": "deny"}] * 2,
            "tests[1] (name 't'), field 'name'",
            "duplicate test name",
        ),
    ],
)
def test_bad_bundle_tests_are_rejected(tests: Any, where: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_bundle("t.yaml", bundle_with_tests(tests))
    message = str(info.value)
    assert "'t.yaml'" in message and where in message and problem in message, message


def test_snapshot_ids_of_bundles_without_new_features_are_unchanged() -> None:
    # Pinned from the engine before constraints, enforcement and when existed: audit records stay comparable.
    text = "version: 3\ndefault_decision: allow\nrules:\n- id: a\n  match: {topics: [job.*], tenants: [acme]}\n"
    text += "  decision: deny\n  reason: nope\n"
    assert PolicySet.from_sources([("b.yaml", text)]).snapshot_id == "v1:3c056eb343f8"


@pytest.mark.parametrize(
    "change",
    [
        {"enforcement": "soft"},
        {"remediations": [{"id": "x", "title": "t"}]},
        {"match": {"topics": ["job.*"], "labels": {"env": "prod"}}},
        {"match": {"topics": ["job.*"], "secrets_present": False}},
    ],
)
def test_snapshot_id_covers_the_new_fields(change: dict[str, Any]) -> None:
    base = PolicySet.from_sources([("p.yaml", bundle_with())]).snapshot_id
    assert PolicySet.from_sources([("p.yaml", bundle_with(**change))]).snapshot_id != base


def test_snapshot_id_ignores_bundle_tests() -> None:
    without = PolicySet.from_sources([("p.yaml", bundle_with_tests([]))])
    with_tests = PolicySet.from_sources(
        [("p.yaml", bundle_with_tests([{"request": {"topic": "x"}, "expect": "deny"}]))]
    )
    assert without.snapshot_id == with_tests.snapshot_id


# --- the runner --------------------------------------------------------------------------------------

RULES = [
    {"id": "allow-jobs", "match": {"topics": ["job.*"]}, "decision": "allow", "reason": "jobs"},
    {"id": "deny-rm", "match": {"topics": ["job.rm"]}, "decision": "deny", "reason": "rm"},
    {
        "id": "approve-prod",
        "match": {"topics": ["job.*"], "labels": {"env": "prod"}},
        "decision": "require_approval",
        "reason": "p",
    },
    {
        "id": "watch-secrets",
        "match": {"secrets_present": True},
        "decision": "deny",
        "reason": "s",
        "enforcement": "shadow",
    },
    {"id": "never-hit", "match": {"tenants": ["nobody"]}, "decision": "deny", "reason": "n"},
]


def test_runner_reports_failures_and_rule_coverage() -> None:
    own_tests = [
        {"name": "rm is denied", "request": {"topic": "job.rm"}, "expect": "deny", "expect_rule_id": "deny-rm"},
        {
            "name": "prod asks",
            "request": {"topic": "job.x", "labels": {"env": "prod"}, "risk_tags": ["secrets"]},
            "expect": "require_approval",
        },
        {"request": {"topic": "other"}, "expect": "deny", "expect_rule_id": ""},
    ]
    wrong_tests = [
        {"name": "wrong kind", "request": {"topic": "job.echo"}, "expect": "deny"},
        {"name": "wrong rule", "request": {"topic": "job.rm"}, "expect": "deny", "expect_rule_id": "allow-jobs"},
        {"name": "wrong default", "request": {"topic": "job.rm"}, "expect": "deny", "expect_rule_id": ""},
    ]
    ps = PolicySet.from_sources(
        [
            ("a.yaml", yaml.safe_dump({"version": 1, "rules": RULES, "tests": own_tests})),
            ("b.yaml", yaml.safe_dump({"version": 1, "tests": wrong_tests})),
        ]
    )
    assert [t.name for t in ps.tests] == [
        "rm is denied",
        "prod asks",
        "tests[2]",
        "wrong kind",
        "wrong rule",
        "wrong default",
    ]
    failures = run_bundle_tests(ps)
    assert all(isinstance(f, TestFailure) for f in failures)
    assert [f.message for f in failures] == [
        "b.yaml: wrong kind: expected deny, got allow (reason: jobs)",
        "b.yaml: wrong rule: expected rule 'allow-jobs', got 'deny-rm' (reason: rm)",
        "b.yaml: wrong default: expected rule the default decision, got 'deny-rm' (reason: rm)",
    ]
    assert failures[0].actual.kind is DecisionKind.ALLOW and failures[0].test.bundle == "b.yaml"
    report = bundle_test_report(ps)
    assert not report.passed and len(report.results) == 6
    assert report.rule_hits["watch-secrets"] == ("a.yaml: prod asks",)  # shadow hits count as coverage
    assert report.rule_hits["deny-rm"] == ("a.yaml: rm is denied", "b.yaml: wrong rule", "b.yaml: wrong default")
    assert report.uncovered_rule_ids == ("never-hit",)
    assert report.coverage == pytest.approx(4 / 5)


def test_test_requests_carry_every_field() -> None:
    request = {
        "job_id": "j",
        "topic": "job.x",
        "tenant": "acme",
        "actor_id": "alice",
        "actor_type": "human",
        "capability": "c",
        "risk_tags": ["prod"],
        "requires": [],
        "pack_id": "p",
        "labels": {"env": "prod"},
        "priority": "batch",
        "estimated_cost": 2,
    }
    [test] = parse_bundle("t.yaml", bundle_with_tests([{"request": request, "expect": "deny"}])).tests
    assert test.request == PolicyRequest(
        job_id="j",
        topic="job.x",
        tenant="acme",
        actor_id="alice",
        actor_type="human",
        capability="c",
        risk_tags=("prod",),
        pack_id="p",
        labels={"env": "prod"},
        priority="batch",
        estimated_cost=2.0,
    )
