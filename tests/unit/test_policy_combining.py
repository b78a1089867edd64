"""Combining decisions: precedence of every kind, enforcement modes, remediations, wire mapping."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml

from coretex.agent.v1 import safety_pb2
from coretex.kernel.server import response_from_decision
from coretex.policy import (
    PRECEDENCE,
    DecisionKind,
    Enforcement,
    PolicyRequest,
    PolicySet,
    Remediation,
)

REQ = PolicyRequest(topic="job.x")


def rule(rule_id: str, decision: str, **extra: Any) -> dict[str, Any]:
    body = {"id": rule_id, "match": {"topics": ["job.*"]}, "decision": decision, "reason": f"because {rule_id}"}
    if decision == "allow_with_constraints":
        body["constraints"] = {"budgets": {"max_retries": 1}}
    return body | extra


def policy(*rules: dict[str, Any], default: str = "deny") -> PolicySet:
    text = yaml.safe_dump({"version": 1, "default_decision": default, "rules": list(rules)})
    return PolicySet.from_sources([("p.yaml", text)])


@pytest.mark.parametrize(("stricter", "looser"), list(itertools.combinations([k.value for k in PRECEDENCE], 2)))
def test_stricter_kind_wins_whatever_the_ids(stricter: str, looser: str) -> None:
    for strict_id, loose_id in (("a", "b"), ("b", "a")):
        decision = policy(rule(strict_id, stricter), rule(loose_id, looser)).evaluate(REQ)
        assert (decision.kind.value, decision.rule_id) == (stricter, strict_id)
        assert decision.matched_rule_ids == ("a", "b")


def test_throttle_sits_between_require_approval_and_the_allows() -> None:
    assert PRECEDENCE.index(DecisionKind.REQUIRE_APPROVAL) < PRECEDENCE.index(DecisionKind.THROTTLE)
    assert PRECEDENCE.index(DecisionKind.THROTTLE) < PRECEDENCE.index(DecisionKind.ALLOW_WITH_CONSTRAINTS)
    assert (
        policy(rule("t", "throttle"), rule("c", "allow_with_constraints")).evaluate(REQ).kind is DecisionKind.THROTTLE
    )


# --- enforcement --------------------------------------------------------------------------------------


def test_soft_deny_asks_for_approval() -> None:
    decision = policy(rule("d", "deny", enforcement="soft"), rule("a", "allow")).evaluate(REQ)
    assert (decision.kind, decision.rule_id, decision.enforcement) == (
        DecisionKind.REQUIRE_APPROVAL,
        "d",
        Enforcement.SOFT,
    )
    assert decision.approval_required and decision.reason == "because d"


def test_hard_deny_beats_a_soft_one() -> None:
    decision = policy(rule("a-soft", "deny", enforcement="soft"), rule("b-hard", "deny")).evaluate(REQ)
    assert (decision.kind, decision.rule_id, decision.enforcement) == (DecisionKind.DENY, "b-hard", Enforcement.HARD)


def test_advisory_deny_allows_with_a_warning() -> None:
    decision = policy(rule("adv", "deny", enforcement="advisory")).evaluate(REQ)
    assert (decision.kind, decision.rule_id, decision.enforcement) == (
        DecisionKind.ALLOW,
        "adv",
        Enforcement.ADVISORY,
    )
    assert decision.warnings == ("advisory rule 'adv' would deny: because adv",)


def test_a_hard_allow_reports_before_an_advisory_one() -> None:
    decision = policy(rule("a-adv", "require_approval", enforcement="advisory"), rule("b-allow", "allow")).evaluate(REQ)
    assert (decision.kind, decision.rule_id, decision.enforcement) == (DecisionKind.ALLOW, "b-allow", Enforcement.HARD)
    assert decision.matched_rule_ids == ("a-adv", "b-allow")
    assert decision.warnings == ("advisory rule 'a-adv' would require_approval: because a-adv",)


def test_shadow_rules_never_change_the_decision_but_are_reported() -> None:
    ps = policy(rule("shadow-deny", "deny", enforcement="shadow"), rule("allow", "allow"))
    decision = ps.evaluate(REQ)
    assert (decision.kind, decision.rule_id) == (DecisionKind.ALLOW, "allow")
    assert decision.matched_rule_ids == ("allow",) and decision.shadow_rule_ids == ("shadow-deny",)
    explanation = ps.explain(REQ)
    assert "shadow matches (not applied): shadow-deny (deny, shadow)" in explanation.summary()
    assert "shadow-deny (deny, shadow) from 'p.yaml': shadow: would deny, not applied" in explanation.render()


def test_only_shadow_matches_fall_back_to_the_default() -> None:
    decision = policy(rule("s", "allow", enforcement="shadow")).evaluate(REQ)
    assert (decision.kind, decision.rule_id, decision.shadow_rule_ids) == (DecisionKind.DENY, "", ("s",))
    assert decision.reason == "no rule matched; default decision deny"


# --- remediations -----------------------------------------------------------------------------------

REMEDY = {
    "id": "use-dry-run",
    "title": "Run it as a dry run",
    "summary": "shows what would change",
    "replacement_topic": "job.x.dry-run",
    "replacement_capability": "fs.read",
    "add_labels": {"dry_run": "true"},
    "remove_labels": ["force"],
}


def test_remediations_of_every_matching_deny_rule_are_carried() -> None:
    ps = policy(
        rule("d1", "deny", remediations=[REMEDY]),
        rule("d2", "deny", enforcement="soft", remediations=[{"id": "ask", "title": "Ask secops"}]),
        rule("d3", "deny", enforcement="advisory", remediations=[{"id": "never", "title": "advisory"}]),
        rule("a", "allow"),
    )
    decision = ps.evaluate(REQ)
    assert decision.kind is DecisionKind.DENY
    assert decision.remediations == (
        Remediation(
            id="use-dry-run",
            title="Run it as a dry run",
            summary="shows what would change",
            replacement_topic="job.x.dry-run",
            replacement_capability="fs.read",
            add_labels=(("dry_run", "true"),),
            remove_labels=("force",),
        ),
        Remediation(id="ask", title="Ask secops"),
    )
    assert "remediations: use-dry-run, ask" in ps.explain(REQ).summary()


def test_soft_deny_keeps_its_remediations_and_allows_have_none() -> None:
    soft = policy(rule("d", "deny", enforcement="soft", remediations=[REMEDY])).evaluate(REQ)
    assert soft.kind is DecisionKind.REQUIRE_APPROVAL and [r.id for r in soft.remediations] == ["use-dry-run"]
    advisory = policy(rule("d", "deny", enforcement="advisory", remediations=[REMEDY])).evaluate(REQ)
    assert advisory.kind is DecisionKind.ALLOW and advisory.remediations == ()


# --- the CAP response -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "wire", "approval"),
    [
        ("allow", safety_pb2.DECISION_TYPE_ALLOW, False),
        ("deny", safety_pb2.DECISION_TYPE_DENY, False),
        ("require_approval", safety_pb2.DECISION_TYPE_REQUIRE_HUMAN, True),
        ("throttle", safety_pb2.DECISION_TYPE_THROTTLE, False),
        ("allow_with_constraints", safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS, False),
    ],
)
def test_response_maps_every_kind(kind: str, wire: int, approval: bool) -> None:
    response = response_from_decision(policy(rule("r", kind)).evaluate(REQ))
    assert (response.decision, response.approval_required, response.rule_id) == (wire, approval, "r")


def test_response_carries_remediations_and_warnings() -> None:
    ps = policy(
        rule("d", "deny", enforcement="soft", remediations=[REMEDY]),
        rule("w", "allow", enforcement="advisory"),
    )
    response = response_from_decision(ps.evaluate(REQ))
    assert response.decision == safety_pb2.DECISION_TYPE_REQUIRE_HUMAN and response.approval_required
    [remedy] = response.remediations
    assert (remedy.id, remedy.replacement_topic, dict(remedy.add_labels), list(remedy.remove_labels)) == (
        "use-dry-run",
        "job.x.dry-run",
        {"dry_run": "true"},
        ["force"],
    )
    assert response.reason == "because d (warnings: advisory rule 'w' would allow: because w)"
