"""Every match key (positive and negative), `when` expressions, the index, and explain traces."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from coretex.errors import PolicyError
from coretex.policy import DecisionKind, PolicyRequest, PolicySet, RuleTrace, WhenExpressionError
from coretex.policy.match import compile_criteria


def policy_with(match: dict[str, Any], decision: str = "allow", **extra: Any) -> PolicySet:
    rule = {"id": "r", "match": match, "decision": decision, "reason": "because"} | extra
    return PolicySet.from_sources([("p.yaml", yaml.safe_dump({"version": 1, "rules": [rule]}))])


def matches(ps: PolicySet, **request: Any) -> bool:
    request.setdefault("topic", "job.x")
    return ps.evaluate(PolicyRequest(**request)).rule_id == "r"


# --- structured keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "yes", "no"),
    [
        ({"tenants": ["acme", "globex"]}, {"tenant": "globex"}, {"tenant": "acme-corp"}),
        ({"capabilities": ["repo.write"]}, {"capability": "repo.write"}, {"capability": "repo.read"}),
        ({"pack_ids": ["sre"]}, {"pack_id": "sre"}, {"pack_id": ""}),
        ({"actor_ids": ["alice"]}, {"actor_id": "alice"}, {"actor_id": "bob"}),
        ({"actor_types": ["human"]}, {"actor_type": "human"}, {"actor_type": "service"}),
        ({"risk_tags": ["prod", "write"]}, {"risk_tags": ("net", "write")}, {"risk_tags": ("net",)}),
        ({"requires": ["git", "docker"]}, {"requires": ("docker", "git", "go")}, {"requires": ("git",)}),
        (
            {"labels": {"env": "prod", "team": "a"}},
            {"labels": {"env": "prod", "team": "a", "x": "y"}},
            {"labels": {"env": "prod"}},
        ),
        ({"labels": {"env": "prod"}}, {"labels": {"env": "prod"}}, {"labels": {"env": "Prod"}}),
        ({"secrets_present": True}, {"labels": {"secrets_present": "TRUE"}}, {"labels": {"secrets_present": "no"}}),
        ({"secrets_present": True}, {"risk_tags": ("secrets",)}, {"risk_tags": ("secret",)}),
        ({"secrets_present": False}, {"risk_tags": ("prod",)}, {"risk_tags": ("secrets",)}),
        (
            {"topics": ["job.*"], "tenants": ["acme"]},
            {"topic": "job.a", "tenant": "acme"},
            {"topic": "x.a", "tenant": "acme"},
        ),
    ],
)
def test_each_match_key_matches_and_refuses(match: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]) -> None:
    ps = policy_with(match)
    assert matches(ps, **yes)
    assert not matches(ps, **no)


def test_every_listed_key_must_hold() -> None:
    ps = policy_with({"tenants": ["acme"], "risk_tags": ["prod"], "labels": {"env": "prod"}})
    full = {"tenant": "acme", "risk_tags": ("prod",), "labels": {"env": "prod"}}
    assert matches(ps, **full)
    for key in full:
        assert not matches(ps, **{k: v for k, v in full.items() if k != key}), key


# --- when ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "request_fields", "expected"),
    [
        ('request.labels["env"] == "prod"', {"labels": {"env": "prod"}}, True),
        ('request.labels["env"] == "prod"', {"labels": {"env": "dev"}}, False),
        ('"prod" in request.risk_tags && size(request.requires) == 0', {"risk_tags": ("prod",)}, True),
        ("request.estimated_cost > 10.0", {"estimated_cost": 10.5}, True),
        ("request.estimated_cost > 10.0", {"estimated_cost": 3}, False),
        ('request.priority == "critical"', {"priority": "critical"}, True),
        ("request.secrets_present", {"risk_tags": ("secrets",)}, True),
        ('request.topic.startsWith("job.") && request.tenant == "acme"', {"tenant": "acme"}, True),
        ('request.actor_type == "human" || request.actor_id == "root"', {"actor_id": "root"}, True),
        ('request.pack_id == "" && request.capability == "" && request.job_id == "j"', {"job_id": "j"}, True),
    ],
)
def test_when_expressions(expression: str, request_fields: dict[str, Any], expected: bool) -> None:
    ps = policy_with({"topics": ["job.*"], "when": expression})
    assert matches(ps, **request_fields) is expected
    assert not ps.evaluate(PolicyRequest(topic="job.x", **request_fields)).warnings


def test_when_runs_only_after_structured_keys_matched() -> None:
    # Evaluating this `when` would fail (no label "env"); it must not even run for another tenant.
    ps = policy_with({"topics": ["job.*"], "tenants": ["acme"], "when": 'request.labels["env"] == "prod"'}, "deny")
    other = ps.explain(PolicyRequest(topic="job.x", tenant="globex"))
    assert other.decision.warnings == () and other.decision.rule_id == ""
    trace = other.trace_for("r")
    assert isinstance(trace, RuleTrace)
    assert [(c.criterion, c.matched, c.observed) for c in trace.checks] == [
        ("tenants", False, "'globex'"),
        ("topics", True, "'job.x'"),
        ("when", False, "not evaluated"),
    ]
    assert "skip when" in other.render()


@pytest.mark.parametrize(
    ("decision", "fails_closed_by_matching"),
    [("deny", True), ("require_approval", True), ("throttle", True), ("allow", False)],
)
def test_when_runtime_error_fails_closed(decision: str, fails_closed_by_matching: bool) -> None:
    ps = policy_with({"topics": ["job.*"], "when": 'request.labels["env"] == "prod"'}, decision=decision)
    request = PolicyRequest(topic="job.x")  # no "env" label: a CEL runtime error
    result = ps.evaluate(request)
    assert (result.rule_id == "r") is fails_closed_by_matching
    assert len(result.warnings) == 1 and "rule 'r': when failed" in result.warnings[0]
    assert "no such key" in result.warnings[0]
    explanation = ps.explain(request)
    assert explanation.decision == result
    when = next(c for c in explanation.hits[0].checks if c.criterion == "when") if explanation.hits else None
    if fails_closed_by_matching:
        assert when is not None and when.observed == "error" and "fails closed: the rule matches" in when.detail
    else:
        assert result.kind is DecisionKind.DENY  # the default: the allow did not match
        assert "fails closed: the rule does not match" in explanation.summary()


def test_allow_with_constraints_fails_closed_by_not_matching() -> None:
    ps = policy_with(
        {"topics": ["job.*"], "when": "1 / 0 == 1"},
        decision="allow_with_constraints",
        constraints={"tools": ["git"]},
    )
    result = ps.evaluate(PolicyRequest(topic="job.x"))
    assert result.kind is DecisionKind.DENY and result.rule_id == ""
    assert "when failed" in result.warnings[0]


def test_when_that_is_not_a_bool_is_an_error() -> None:
    ps = policy_with({"topics": ["job.*"], "when": "request.topic"}, decision="deny")
    result = ps.evaluate(PolicyRequest(topic="job.x"))
    assert result.rule_id == "r" and "must evaluate to a bool" in result.warnings[0]


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("request.topic == ", "line 1, column 15"),
        ('request.topic == "a" &&\n  (request.tenant', "line 2, column"),
        ("request.topic ==== 'x'", "line 1, column 17"),
    ],
)
def test_when_syntax_error_names_file_rule_expression_and_position(expression: str, position: str) -> None:
    with pytest.raises(WhenExpressionError) as info:
        policy_with({"topics": ["job.*"], "when": expression})
    message = str(info.value)
    assert isinstance(info.value, PolicyError) and info.value.code == "policy_when_invalid"
    for part in ("'p.yaml'", "rules[0] (id 'r')", "'match.when'", repr(expression), position):
        assert part in message, message


def test_when_reading_an_unknown_request_field_is_a_compile_error() -> None:
    with pytest.raises(WhenExpressionError, match=r"unknown field request.tennant at line 1, column 9"):
        policy_with({"topics": ["job.*"], "when": 'request.tennant == "acme"'})


def test_when_expression_length_is_bounded() -> None:
    with pytest.raises(WhenExpressionError, match="longer than"):
        policy_with({"topics": ["job.*"], "when": "true && " * 600 + "true"})


def test_when_is_part_of_the_snapshot_id() -> None:
    a = policy_with({"topics": ["job.*"], "when": "request.tenant == 'a'"})
    b = policy_with({"topics": ["job.*"], "when": "request.tenant == 'b'"})
    assert a.snapshot_id != b.snapshot_id


# --- explain ----------------------------------------------------------------------------------------


def test_explain_shows_observed_values_and_redacts_secret_looking_labels() -> None:
    ps = policy_with({"topics": ["job.*"], "labels": {"env": "prod", "api_token": "t0ken", "db_password": "pw"}})
    request = PolicyRequest(topic="job.x", labels={"env": "dev", "api_token": "hunter2", "db_password": "pw"})
    explanation = ps.explain(request)
    checks = {c.criterion: c for c in explanation.traces[0].checks}
    assert checks["labels.env"].detail == "label env is 'dev', not 'prod'"
    assert checks["labels.api_token"].detail == "label api_token is <redacted>, not <redacted>"
    assert checks["labels.db_password"].matched and checks["labels.db_password"].observed == "<redacted>"
    text = explanation.render()
    assert "hunter2" not in text and "t0ken" not in text and "'pw'" not in text
    assert "FAIL labels.env" in text and "ok   topics: topic 'job.x' matches 'job.*'" in text


def test_explain_failed_criteria_report_what_was_seen() -> None:
    ps = policy_with({"topics": ["job.a*", "job.b"], "requires": ["git", "go"], "risk_tags": ["prod"]})
    explanation = ps.explain(PolicyRequest(topic="job.b", requires=("git",), risk_tags=("dev",)))
    details = [c.detail for c in explanation.traces[0].checks]
    assert "risk tags ['dev'] include none of ['prod']" in details
    assert "requires ['git'] lack ['go']" in details
    assert "topic 'job.b' matches 'job.b'" in details
    assert explanation.outcome_of(explanation.traces[0]) == "no match"


def test_rules_filtered_by_the_index_are_summarized() -> None:
    rules = [
        {"id": "topic-rule", "match": {"topics": ["job.other.*"]}, "decision": "deny", "reason": "r"},
        {"id": "tenant-rule", "match": {"tenants": ["globex"]}, "decision": "deny", "reason": "r"},
        {"id": "everyone", "match": {"risk_tags": ["prod"]}, "decision": "deny", "reason": "r"},
    ]
    ps = PolicySet.from_sources([("p.yaml", yaml.safe_dump({"version": 1, "rules": rules}))])
    explanation = ps.explain(PolicyRequest(topic="job.x", tenant="acme"))
    assert [t.rule.id for t in explanation.traces] == ["everyone"]
    assert explanation.trace_for("topic-rule") == "not a candidate (topic prefix)"
    assert explanation.trace_for("tenant-rule") == "not a candidate (tenant)"
    assert "considered 1 of 3 rules" in explanation.render()


# --- the index --------------------------------------------------------------------------------------

GLOBS = ["job.*", "job.a?c", "*.delete", "job.[ab]*", "j*b.x", "job.abc", "job.abc.*", "x", "?", "[jk]ob.*"]
TOPICS = ["job.abc", "job.abc.delete", "job.x", "jxb.x", "kob.z", "x", "y", "", "job.b", "job.", "a.delete"]


@st.composite
def indexed_rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for i in range(draw(st.integers(1, 12))):
        match: dict[str, Any] = {}
        if draw(st.booleans()):
            match["topics"] = draw(st.lists(st.sampled_from(GLOBS), min_size=1, max_size=3))
        if draw(st.booleans()):
            match["tenants"] = draw(st.lists(st.sampled_from(["acme", "globex"]), min_size=1, max_size=2))
        if draw(st.booleans()) or not match:
            match["capabilities"] = draw(st.lists(st.sampled_from(["read", "write"]), min_size=1, max_size=2))
        rules.append({"id": f"r{i}", "match": match, "decision": "allow", "reason": "r"})
    return rules


@hyp_settings(max_examples=100, database=None, deadline=None)
@given(rules=indexed_rules())
def test_index_never_hides_a_matching_rule(rules: list[dict[str, Any]]) -> None:
    """Whatever the globs and keys, the indexed evaluator finds exactly the rules a full scan finds."""
    ps = PolicySet.from_sources([("p.yaml", yaml.safe_dump({"version": 1, "rules": rules}))])
    for topic in TOPICS:
        for tenant in ("", "acme", "globex"):
            for capability in ("", "read", "write"):
                request = PolicyRequest(topic=topic, tenant=tenant, capability=capability)
                full_scan = sorted(
                    rule.id for rule in ps.rules if all(check.matched for check in _all_checks(ps, rule.id, request))
                )
                assert ps.evaluate(request).matched_rule_ids == tuple(full_scan)


def _all_checks(ps: PolicySet, rule_id: str, request: PolicyRequest) -> list[Any]:
    return [criterion.check(request) for criterion in compile_criteria(ps.rule(rule_id).match)]
