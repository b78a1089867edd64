"""Impact analysis (pure): decisions of a draft policy compared with the current one."""

from __future__ import annotations

import pytest

from coretex.policy import DecisionKind, PolicyRequest, PolicySet, parse_bundle
from coretex.policy.impact import impact, with_drafts

BASE = """
version: 1
rules:
  - id: allow-jobs
    match: {topics: ["job.*"]}
    decision: allow
    reason: jobs run
  - id: deny-danger
    match: {topics: ["job.danger.*"]}
    decision: deny
    reason: dangerous
"""
TEAM = """
version: 1
rules:
  - id: gate-prod
    match: {topics: ["job.deploy"], labels: {env: prod}}
    decision: require_approval
    reason: prod deploys need a human
"""
TEAM_DRAFT = """
version: 2
rules:
  - id: deny-prod
    match: {topics: ["job.deploy"], labels: {env: prod}}
    decision: deny
    reason: prod deploys are frozen
  - id: allow-danger-dry-run
    match: {topics: ["job.danger.rm"], labels: {dry_run: "true"}}
    decision: allow
    reason: dry runs are harmless
"""
NEW_BUNDLE = """
version: 1
rules:
  - id: deny-echo
    match: {topics: ["job.echo"]}
    decision: deny
    reason: echo is retired
"""

A = DecisionKind.ALLOW
D = DecisionKind.DENY
R = DecisionKind.REQUIRE_APPROVAL


def policy(*named: tuple[str, str]) -> PolicySet:
    return PolicySet([parse_bundle(name, text) for name, text in named])


def requests() -> list[tuple[str, PolicyRequest]]:
    return [
        ("echo-1", PolicyRequest(topic="job.echo")),
        ("echo-2", PolicyRequest(topic="job.echo", tenant="acme")),
        ("prod-1", PolicyRequest(topic="job.deploy", labels={"env": "prod"})),
        ("prod-2", PolicyRequest(topic="job.deploy", labels={"env": "prod"})),
        ("stage", PolicyRequest(topic="job.deploy", labels={"env": "stage"})),
        ("rm", PolicyRequest(topic="job.danger.rm")),
        ("other", PolicyRequest(topic="other.thing")),
    ]


def test_identical_policies_change_nothing() -> None:
    current = policy(("base", BASE), ("team", TEAM))
    report = impact(requests(), current, current)
    assert (report.total, report.unchanged, report.changed, report.rule_changed) == (7, 7, 0, 0)
    assert report.transitions == ()
    assert report.current_snapshot == report.draft_snapshot == current.snapshot_id


def test_transitions_are_counted_per_kind_pair_with_samples() -> None:
    current = policy(("base", BASE), ("team", TEAM))
    draft = PolicySet(with_drafts(current.bundles, [parse_bundle("team", TEAM_DRAFT), parse_bundle("new", NEW_BUNDLE)]))
    report = impact(requests(), current, draft, sample=1)

    assert report.total == 7
    assert report.count(R, D) == 2  # prod deploys: approval -> frozen
    assert report.count(A, D) == 2  # echo retired
    assert report.count(D, A) == 0  # the dry-run allow is outranked by deny-danger: no change
    assert report.unchanged == 3 and report.changed == 4
    by_label = {t.label: t for t in report.transitions}
    assert set(by_label) == {"ALLOW->DENY", "REQUIRE_APPROVAL->DENY"}
    assert by_label["REQUIRE_APPROVAL->DENY"].sample_ids == ("prod-1",)  # sample=1, input order
    assert by_label["ALLOW->DENY"].sample_ids == ("echo-1",)
    # Strictest "before" first: require_approval ranks above allow.
    assert [t.label for t in report.transitions] == ["REQUIRE_APPROVAL->DENY", "ALLOW->DENY"]
    assert report.draft_snapshot == draft.snapshot_id != report.current_snapshot
    body = report.canonical()
    assert body["changed"] == 4 and body["transitions"][0]["count"] == 2


def test_same_kind_by_another_rule_counts_as_unchanged_but_is_reported() -> None:
    current = policy(("base", BASE))
    other = BASE.replace("allow-jobs", "allow-all-jobs")
    report = impact(requests(), current, policy(("base", other)), sample=4)
    assert report.changed == 0 and report.unchanged == 7
    assert report.rule_changed == 5  # every allowed request; rm and other keep their deny
    assert report.rule_changed_sample_ids == ("echo-1", "echo-2", "prod-1", "prod-2")


def test_deny_to_allow_when_a_draft_removes_a_deny() -> None:
    current = policy(("base", BASE))
    draft = policy(("base", BASE.split("  - id: deny-danger")[0]))
    report = impact(requests(), current, draft, sample=0)
    assert report.count(D, A) == 1
    assert report.transitions[0].sample_ids == ()  # sample=0 keeps counts only


def test_empty_input_and_bad_sample() -> None:
    current = policy(("base", BASE))
    assert impact([], current, current).total == 0
    with pytest.raises(ValueError, match="sample"):
        impact([], current, current, sample=-1)


def test_with_drafts_replaces_by_name_and_appends_new_ones() -> None:
    base, team = parse_bundle("base", BASE), parse_bundle("team", TEAM)
    draft_team, new = parse_bundle("team", TEAM_DRAFT), parse_bundle("new", NEW_BUNDLE)
    merged = with_drafts([base, team], [new, draft_team])
    assert [b.name for b in merged] == ["base", "team", "new"]
    assert merged[1] is draft_team
    with pytest.raises(ValueError, match="given twice"):
        with_drafts([base], [new, new])
