"""The pure policy engine: bundle parsing, matching, combining, snapshot ids, the base bundle."""

from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from coretex.errors import PolicyError
from coretex.policy import (
    Decision,
    DecisionKind,
    PolicyRequest,
    PolicySet,
    load_bundles,
    parse_bundle,
)
from coretex.policy.evaluator import PRECEDENCE, literal_prefix

BASE_YAML = Path(__file__).resolve().parents[2] / "policies" / "base.yaml"


def rule(rule_id: str, decision: str, topics: list[str] | None = None, tenants: list[str] | None = None) -> dict:
    match: dict[str, list[str]] = {}
    if topics is not None:
        match["topics"] = topics
    if tenants is not None:
        match["tenants"] = tenants
    return {"id": rule_id, "match": match, "decision": decision, "reason": f"because {rule_id}"}


def bundle_text(rules: list[dict], default: str | None = None, version: int = 1) -> str:
    data: dict[str, object] = {"version": version, "rules": rules}
    if default is not None:
        data["default_decision"] = default
    return yaml.safe_dump(data, sort_keys=False)


def policy(*bundles: list[dict] | tuple[list[dict], str]) -> PolicySet:
    sources = []
    for i, item in enumerate(bundles):
        rules, default = item if isinstance(item, tuple) else (item, None)
        sources.append((f"b{i}.yaml", bundle_text(rules, default)))
    return PolicySet.from_sources(sources)


def decide(ps: PolicySet, topic: str, tenant: str = "") -> Decision:
    return ps.evaluate(PolicyRequest(topic=topic, tenant=tenant))


# --- matching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("job.*", "job.echo", True),
        ("job.*", "job.danger.rm", True),  # '*' crosses dots, like fnmatch
        ("job.*", "job.", True),
        ("job.*", "jobs.echo", False),
        ("job.*", "JOB.echo", False),  # case-sensitive
        ("job.echo", "job.echo", True),
        ("job.echo", "job.echo2", False),
        ("job.?cho", "job.echo", True),
        ("job.?cho", "job.eecho", False),
        ("job.[ab]x", "job.bx", True),
        ("job.[ab]x", "job.cx", False),
        ("job.*.delete", "job.repo.delete", True),
        ("job.*.delete", "job.repo.deleted", False),
        ("*", "anything.at.all", True),
    ],
)
def test_topic_globs(pattern: str, topic: str, matches: bool) -> None:
    ps = policy([rule("r", "allow", topics=[pattern])])
    decision = decide(ps, topic)
    assert (decision.kind is DecisionKind.ALLOW) is matches
    assert decision.rule_id == ("r" if matches else "")


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [("job.*", "job."), ("job.echo", "job.echo"), ("*", ""), ("a?b*", "a"), ("a.[bc]", "a."), ("x[*", "x")],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


def test_tenants_match_exactly() -> None:
    ps = policy([rule("acme-only", "allow", topics=["job.*"], tenants=["acme", "globex"])])
    assert decide(ps, "job.echo", "acme").kind is DecisionKind.ALLOW
    assert decide(ps, "job.echo", "globex").rule_id == "acme-only"
    assert decide(ps, "job.echo", "ACME").kind is DecisionKind.DENY
    assert decide(ps, "job.echo", "acme-corp").kind is DecisionKind.DENY
    assert decide(ps, "job.echo", "").kind is DecisionKind.DENY
    assert decide(ps, "other.echo", "acme").kind is DecisionKind.DENY


def test_tenant_only_rule_matches_every_topic() -> None:
    ps = policy([rule("block-evil", "deny", tenants=["evil"]), rule("all-jobs", "allow", topics=["job.*"])])
    assert decide(ps, "job.echo", "evil").rule_id == "block-evil"
    assert decide(ps, "job.echo", "good").rule_id == "all-jobs"


# --- combining --------------------------------------------------------------------------------------


def test_deny_overrides_allow_in_any_order_and_across_bundles() -> None:
    allow = rule("a-allow", "allow", topics=["job.*"])
    deny = rule("z-deny", "deny", topics=["job.danger.*"])
    for ps in (
        policy([allow, deny]),
        policy([deny, allow]),
        policy([allow], [deny]),
        policy([deny], [allow]),
    ):
        decision = decide(ps, "job.danger.rm")
        assert (decision.kind, decision.rule_id, decision.reason) == (
            DecisionKind.DENY,
            "z-deny",
            "because z-deny",
        )
        assert decide(ps, "job.echo").rule_id == "a-allow"


def test_first_rule_by_sorted_id_reports_the_winning_kind() -> None:
    ps = policy([rule("m-allow", "allow", topics=["job.*"]), rule("b-allow", "allow", topics=["job.echo"])])
    assert decide(ps, "job.echo").rule_id == "b-allow"
    assert decide(ps, "job.other").rule_id == "m-allow"


def test_precedence_is_strictest_first() -> None:
    assert PRECEDENCE[0] is DecisionKind.DENY
    assert PRECEDENCE[-1] is DecisionKind.ALLOW
    assert set(PRECEDENCE) == set(DecisionKind)


def test_default_is_deny() -> None:
    ps = policy([rule("r", "allow", topics=["job.*"])])
    decision = decide(ps, "other.topic")
    assert decision == Decision(
        kind=DecisionKind.DENY,
        rule_id="",
        reason="no rule matched; default decision deny",
        snapshot=ps.snapshot_id,
    )


def test_default_allow_needs_every_bundle_to_agree() -> None:
    r1, r2 = [rule("r1", "deny", topics=["x"])], [rule("r2", "deny", topics=["y"])]
    both_allow = policy((r1, "allow"), (r2, "allow"))
    assert decide(both_allow, "z") == Decision(
        DecisionKind.ALLOW, "", "no rule matched; default decision allow", both_allow.snapshot_id
    )
    assert decide(policy((r1, "allow"), (r2, "deny")), "z").kind is DecisionKind.DENY
    assert decide(policy((r1, "allow"), r2), "z").kind is DecisionKind.DENY  # omitted means deny
    assert decide(PolicySet([]), "z").kind is DecisionKind.DENY  # no bundle at all


def test_explanation_names_rule_pattern_and_overridden_rules() -> None:
    ps = PolicySet.from_sources([("base.yaml", BASE_YAML.read_text())])
    summary = ps.explain(PolicyRequest(topic="job.danger.rm")).summary()
    assert "deny-destructive" in summary and "'job.danger.*'" in summary and "'job.danger.rm'" in summary
    assert "allow-platform-jobs (allow)" in summary
    assert "no rule matched topic 'nope'" in ps.explain(PolicyRequest(topic="nope", tenant="t")).summary()


# --- order independence (property) ------------------------------------------------------------------

PATTERNS = ["job.*", "job.echo", "job.danger.*", "job.*.delete", "job.?cho", "job.[de]*", "other.*", "*", "x"]
TOPICS = [
    "job.echo",
    "job.danger.rm",
    "job.repo.delete",
    "job.dx",
    "other.a",
    "x",
    "",
    "jobecho",
    "job.echo.x",
]
TENANTS = ["", "acme", "globex"]


KINDS = ["allow", "deny", "require_approval", "allow_with_constraints", "throttle"]
ENFORCEMENTS = ["hard", "soft", "advisory", "shadow"]
RISKS: list[tuple[str, ...]] = [(), ("prod",), ("prod", "write")]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[tuple[list[dict], str]]:
    ids = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=10, unique=True))
    rules = []
    for rule_id in ids:
        topics = draw(st.none() | st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3))
        tenants = draw(st.none() | st.lists(st.sampled_from(TENANTS[1:]), min_size=1, max_size=2))
        if topics is None and tenants is None:
            topics = [draw(st.sampled_from(PATTERNS))]
        kind = draw(st.sampled_from(KINDS))
        r = rule(rule_id, kind, topics, tenants)
        if draw(st.booleans()):
            r["match"]["risk_tags"] = draw(st.lists(st.sampled_from(["prod", "write"]), min_size=1, max_size=2))
        enforcement = draw(
            st.sampled_from(ENFORCEMENTS if kind == "deny" else [e for e in ENFORCEMENTS if e != "soft"])
        )
        if enforcement != "hard":
            r["enforcement"] = enforcement
        if kind == "allow_with_constraints" or (kind != "deny" and draw(st.booleans())):
            r["constraints"] = {"budgets": {"max_runtime_ms": draw(st.integers(1, 5))}}
        rules.append(r)
    n_bundles = draw(st.integers(1, 3))
    owners = [draw(st.integers(0, n_bundles - 1)) for _ in rules]
    return [
        (
            [r for r, owner in zip(rules, owners, strict=True) if owner == b],
            draw(st.sampled_from(["allow", "deny"])),
        )
        for b in range(n_bundles)
    ]


def reference_decision(
    bundles: list[tuple[list[dict], str]], topic: str, tenant: str, risks: tuple[str, ...]
) -> tuple[str, str, tuple[str, ...], tuple[str, ...], int | None]:
    """A linear scan written from the combining rules in the spec, to check the indexed evaluator.

    Returns (kind, rule_id, matched ids, shadow ids, merged max_runtime_ms).
    """
    hits = [
        r
        for rules, _ in bundles
        for r in rules
        if any(fnmatchcase(topic, p) for p in r["match"].get("topics", ["*"]))
        and tenant in r["match"].get("tenants", [tenant])
        and set(r["match"].get("risk_tags", risks or ["-"])) & set(risks or ["-"])
    ]
    shadow = tuple(sorted(r["id"] for r in hits if r.get("enforcement") == "shadow"))
    effective = [r for r in hits if r.get("enforcement") != "shadow"]

    def effect(r: dict) -> str:
        return {"soft": "require_approval", "advisory": "allow"}.get(r.get("enforcement", "hard"), r["decision"])

    if not effective:
        default = "allow" if all(d == "allow" for _, d in bundles) else "deny"
        return default, "", (), shadow, None
    order = ["deny", "require_approval", "throttle", "allow_with_constraints", "allow"]
    kind = min((effect(r) for r in effective), key=order.index)
    winner = min(
        (r for r in effective if effect(r) == kind), key=lambda r: (r.get("enforcement") == "advisory", r["id"])
    )
    runtimes = [
        r["constraints"]["budgets"]["max_runtime_ms"]
        for r in effective
        if "constraints" in r and r.get("enforcement", "hard") in ("hard", "soft")
    ]
    runtime = min(runtimes) if runtimes and kind != "deny" else None
    if kind == "allow" and runtime is not None:
        kind = "allow_with_constraints"
    return kind, winner["id"], tuple(sorted(r["id"] for r in effective)), shadow, runtime


@hyp_settings(max_examples=200, database=None, deadline=None)
@given(bundles=rule_sets(), data=st.data())
def test_decisions_ignore_rule_and_bundle_order(bundles: list[tuple[list[dict], str]], data: st.DataObject) -> None:
    original = policy(*bundles)
    shuffled_bundles = [(data.draw(st.permutations(rules)), default) for rules, default in bundles]
    shuffled_bundles = data.draw(st.permutations(shuffled_bundles))
    shuffled = policy(*shuffled_bundles)
    assert shuffled.snapshot_id == original.snapshot_id
    for topic in TOPICS:
        for tenant in TENANTS:
            for risks in RISKS:
                request = PolicyRequest(topic=topic, tenant=tenant, risk_tags=risks)
                expected = original.evaluate(request)
                assert shuffled.evaluate(request) == expected
                assert original.explain(request).decision == expected
                got = (
                    expected.kind.value,
                    expected.rule_id,
                    expected.matched_rule_ids,
                    expected.shadow_rule_ids,
                    expected.constraints.budgets.max_runtime_ms,
                )
                assert got == reference_decision(bundles, topic, tenant, risks)


# --- snapshot ids -----------------------------------------------------------------------------------


def test_snapshot_id_is_stable_for_same_content() -> None:
    rules = [rule("a", "allow", topics=["job.*"]), rule("b", "deny", topics=["job.x", "job.y"])]
    one = PolicySet.from_sources([("one.yaml", bundle_text(rules))])
    assert re.fullmatch(r"v1:[0-9a-f]{12}", one.snapshot_id)
    same = PolicySet.from_sources([("one.yaml", bundle_text(rules))])
    renamed_reordered = PolicySet.from_sources(
        [("other-name.yml", bundle_text([rules[1] | {"match": {"topics": ["job.y", "job.x"]}}, rules[0]]))]
    )
    assert same.snapshot_id == one.snapshot_id == renamed_reordered.snapshot_id
    assert decide(one, "job.echo").snapshot == one.snapshot_id


@pytest.mark.parametrize(
    "changed",
    [
        [rule("a", "allow", topics=["job.*"]), rule("b", "deny", topics=["job.x"])],
        [rule("a", "allow", topics=["job.*"]), rule("b", "allow", topics=["job.x", "job.y"])],
        [rule("a", "allow", topics=["job.*"]), rule("c", "deny", topics=["job.x", "job.y"])],
        [rule("a", "allow", topics=["job.*"], tenants=["t"]), rule("b", "deny", topics=["job.x", "job.y"])],
    ],
)
def test_snapshot_id_changes_with_content(changed: list[dict]) -> None:
    rules = [rule("a", "allow", topics=["job.*"]), rule("b", "deny", topics=["job.x", "job.y"])]
    base = PolicySet.from_sources([("p.yaml", bundle_text(rules))]).snapshot_id
    assert PolicySet.from_sources([("p.yaml", bundle_text(changed))]).snapshot_id != base
    assert PolicySet.from_sources([("p.yaml", bundle_text(rules, default="allow"))]).snapshot_id != base
    assert PolicySet.from_sources([("p.yaml", bundle_text(rules, version=2))]).snapshot_id != base


# --- bundle validation ------------------------------------------------------------------------------

GOOD_RULE = {"id": "r1", "match": {"topics": ["job.*"]}, "decision": "allow", "reason": "ok"}


def with_rule(**changes: object) -> str:
    changed = dict(GOOD_RULE)
    for key, value in changes.items():
        if value is None:
            changed.pop(key)
        else:
            changed[key] = value
    return yaml.safe_dump({"version": 1, "rules": [GOOD_RULE | {"id": "r0"}, changed]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (with_rule(colour="red"), ["rules[1] (id 'r1')", "'colour'", "unknown key"]),
        (with_rule(match={"topics": ["job.*"], "topic": ["x"]}), ["rules[1] (id 'r1')", "'match.topic'"]),
        (with_rule(decision="allow_with_constraints"), ["rules[1] (id 'r1')", "'constraints'", "is required"]),
        (with_rule(enforcement="soft"), ["rules[1] (id 'r1')", "'enforcement'", "only applies to deny"]),
        (with_rule(decision="maybe"), ["rules[1] (id 'r1')", "'decision'", "unknown decision 'maybe'"]),
        (with_rule(decision=True), ["rules[1] (id 'r1')", "'decision'"]),
        (with_rule(id="r0"), ["rules[1] (id 'r0')", "'id'", "duplicate rule id", "rules[0]"]),
        (with_rule(id=None), ["rules[1]", "'id'", "is required"]),
        (with_rule(id="bad id!"), ["rules[1]", "'id'", "must match"]),
        (with_rule(reason=None), ["rules[1] (id 'r1')", "'reason'", "is required"]),
        (with_rule(reason="  "), ["rules[1] (id 'r1')", "'reason'", "non-empty string"]),
        (with_rule(match={}), ["rules[1] (id 'r1')", "'match'", "at least one"]),
        (with_rule(match=["job.*"]), ["rules[1] (id 'r1')", "'match'", "must be a mapping"]),
        (with_rule(match={"topics": []}), ["rules[1] (id 'r1')", "'match.topics'", "non-empty list"]),
        (with_rule(match={"topics": "job.*"}), ["rules[1] (id 'r1')", "'match.topics'", "non-empty list"]),
        (with_rule(match={"topics": ["job.*", 3]}), ["rules[1] (id 'r1')", "'match.topics[1]'"]),
        (with_rule(match={"tenants": "acme"}), ["rules[1] (id 'r1')", "'match.tenants'"]),
        ("version: 1\nrules: []\nextra: 1\n", ["'extra'", "unknown key"]),
        ("rules: []\n", ["'version'", "is required"]),
        ("version: one\n", ["'version'", "positive integer"]),
        ("version: 0\n", ["'version'", "positive integer"]),
        ("version: true\n", ["'version'", "positive integer"]),
        ("version: 1\ndefault_decision: throttle\n", ["'default_decision'", "must be one of allow, deny"]),
        ("version: 1\nrules: {id: x}\n", ["'rules'", "must be a list"]),
        ("version: 1\nrules: [just-a-string]\n", ["rules[0]", "'rules'", "must be a mapping"]),
        ("", ["'<document>'", "must be a mapping"]),
        ("- 1\n- 2\n", ["'<document>'", "must be a mapping"]),
        ("version: 1\nrules: [\n", ["not valid YAML"]),
        ("version: 1\nversion: 2\n", ["not valid YAML", "duplicate key 'version'"]),
        (
            "version: 1\nrules:\n- id: a\n  decision: allow\n  decision: deny\n  match: {topics: [x]}\n  reason: r\n",
            ["duplicate key 'decision'"],
        ),
    ],
)
def test_bad_bundles_are_rejected_with_file_rule_and_field(text: str, expected: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        parse_bundle("teams/acme.yaml", text)
    message = str(info.value)
    assert "'teams/acme.yaml'" in message
    for part in expected:
        assert part in message, message


def test_duplicate_rule_ids_across_bundles_are_rejected() -> None:
    a = bundle_text([rule("shared", "allow", topics=["job.*"])])
    b = bundle_text([rule("other", "deny", topics=["x"]), rule("shared", "deny", topics=["y"])])
    with pytest.raises(PolicyError) as info:
        load_bundles([("a.yaml", a), ("b.yaml", b)])
    message = str(info.value)
    assert "'b.yaml'" in message and "rules[1] (id 'shared')" in message and "'id'" in message
    assert "'a.yaml'" in message
    with pytest.raises(PolicyError, match="loaded twice"):
        load_bundles([("a.yaml", a), ("a.yaml", bundle_text([]))])


def test_parsed_bundle_is_frozen_and_complete() -> None:
    bundle = parse_bundle("base.yaml", BASE_YAML.read_text())
    assert (bundle.version, bundle.default_decision) == (1, DecisionKind.DENY)
    assert [r.id for r in bundle.rules] == ["allow-platform-jobs", "allow-workflow-runs", "deny-destructive"]
    assert bundle.rules[1].match.topics == ("workflow.*",)
    assert bundle.rules[2].match.topics == ("job.danger.*", "job.*.delete")
    with pytest.raises(AttributeError):
        bundle.rules[0].reason = "changed"  # type: ignore[misc]


def test_policy_request_is_frozen() -> None:
    req = PolicyRequest(topic="job.echo", labels={"k": "v"}, risk_tags=["a"])  # type: ignore[arg-type]
    assert req.risk_tags == ("a",)
    with pytest.raises(TypeError):
        req.labels["k"] = "w"  # type: ignore[index]
    assert req == PolicyRequest(topic="job.echo", labels={"k": "v"}, risk_tags=("a",))
    assert hash(req) == hash(PolicyRequest(topic="job.echo", labels={"k": "other"}, risk_tags=("a",)))


# --- the base bundle --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "kind", "rule_id"),
    [
        ("job.echo", DecisionKind.ALLOW, "allow-platform-jobs"),
        ("job.nowhere", DecisionKind.ALLOW, "allow-platform-jobs"),
        ("job.danger.rm", DecisionKind.DENY, "deny-destructive"),
        ("job.repo.delete", DecisionKind.DENY, "deny-destructive"),
        ("other.topic", DecisionKind.DENY, ""),
    ],
)
def test_base_bundle_decisions(topic: str, kind: DecisionKind, rule_id: str) -> None:
    ps = PolicySet.from_sources([(str(BASE_YAML), BASE_YAML.read_text())])
    decision = decide(ps, topic, "default")
    assert (decision.kind, decision.rule_id) == (kind, rule_id)
    expected_reason = {
        "allow-platform-jobs": "platform jobs are allowed by default",
        "deny-destructive": "destructive topics are blocked by the base policy",
        "": "no rule matched; default decision deny",
    }[rule_id]
    assert decision.reason == expected_reason


# --- purity -----------------------------------------------------------------------------------------


def test_policy_package_imports_no_io_library() -> None:
    code = (
        "import sys, coretex.policy\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'redis','celery','kombu','flask','flask_smorest','grpc','grpc_health'} "
        "or m.startswith(('coretex.kernel','coretex.store','coretex.scheduler','coretex.engine',"
        "'coretex.gateway','coretex.sdk','coretex.cli')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
