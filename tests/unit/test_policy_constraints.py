"""Constraints: parsing, the most-restrictive merge (properties), decisions, and the CAP wire mapping."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from coretex.agent.v1 import safety_pb2
from coretex.errors import PolicyError
from coretex.kernel.server import (
    WIRE_NOTHING_ALLOWED,
    constraints_from_wire,
    constraints_to_wire,
    response_from_decision,
)
from coretex.policy import (
    NO_CONSTRAINTS,
    Budgets,
    Constraints,
    DecisionKind,
    DiffLimits,
    FsMode,
    Network,
    PolicyRequest,
    PolicySet,
    RedactionLevel,
    Sandbox,
    merge_all,
    parse_bundle,
)


def constraints_of(value: dict[str, Any]) -> Constraints:
    rule = {"id": "r", "match": {"topics": ["*"]}, "decision": "allow", "reason": "x", "constraints": value}
    return parse_bundle("c.yaml", yaml.safe_dump({"version": 1, "rules": [rule]})).rules[0].constraints


# --- parsing ----------------------------------------------------------------------------------------


def test_every_constraint_field_parses() -> None:
    parsed = constraints_of(
        {
            "budgets": {
                "max_runtime_ms": 60000,
                "max_retries": 2,
                "max_artifact_bytes": 1024,
                "max_concurrent_jobs": 4,
            },
            "sandbox": {
                "isolated": True,
                "network": "egress-allowlist",
                "allowlist": ["b.example", "a.example", "a.example"],
                "fs": "ro",
                "read_only_paths": ["/etc"],
                "read_write_paths": ["/tmp", "/etc"],
            },
            "tools": ["go", "git"],
            "commands": [],
            "diff": {"max_files": 10, "max_lines": 500, "deny_paths": ["secrets/**"]},
            "redaction_level": "strict",
        }
    )
    assert parsed == Constraints(
        budgets=Budgets(60000, 2, 1024, 4),
        sandbox=Sandbox(
            isolated=True,
            network=Network.EGRESS_ALLOWLIST,
            allowlist=("a.example", "b.example"),
            fs=FsMode.RO,
            read_only_paths=("/etc",),
            read_write_paths=("/tmp",),  # a read-only path is never also writable
        ),
        tools=("git", "go"),
        commands=(),  # an empty allowlist: no command at all
        diff=DiffLimits(10, 500, ("secrets/**",)),
        redaction_level=RedactionLevel.STRICT,
    )


@pytest.mark.parametrize(
    ("sandbox", "expected"),
    [
        ({"network": "none"}, Sandbox(isolated=True, network=Network.NONE)),
        ({"isolated": True}, Sandbox(isolated=True, network=Network.NONE)),
        ({"isolated": True, "network": "any"}, Sandbox(isolated=True, network=Network.ANY)),
        ({"fs": "ro"}, Sandbox(fs=FsMode.RO, read_write_paths=())),
        ({"read_write_paths": ["/tmp"]}, Sandbox(fs=FsMode.RO, read_write_paths=("/tmp",))),
        ({"fs": "rw"}, Sandbox(fs=FsMode.RW)),
    ],
)
def test_sandbox_normal_forms(sandbox: dict[str, Any], expected: Sandbox) -> None:
    parsed = constraints_of({"sandbox": sandbox}).sandbox
    assert parsed == expected
    assert (parsed.fs is FsMode.RO) == (parsed.read_write_paths is not None)


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ({}, "constraints", "at least one"),
        ({"budget": {}}, "constraints.budget", "unknown key"),
        ({"budgets": {"max_retries": 0}}, "constraints.budgets.max_retries", "from 1 to 2147483647"),
        ({"budgets": {"max_runtime_ms": -5}}, "constraints.budgets.max_runtime_ms", "from 1"),
        ({"budgets": {"max_runtime_ms": "1s"}}, "constraints.budgets.max_runtime_ms", "integer"),
        ({"budgets": {"max_concurrent_jobs": 2**31}}, "constraints.budgets.max_concurrent_jobs", "2147483647"),
        ({"budgets": {"max_cpu": 1}}, "constraints.budgets.max_cpu", "unknown key"),
        ({"sandbox": {"network": "some"}}, "constraints.sandbox.network", "unknown value 'some'"),
        ({"sandbox": {"network": "egress-allowlist"}}, "constraints.sandbox.allowlist", "is required"),
        ({"sandbox": {"network": "any", "allowlist": ["a"]}}, "constraints.sandbox.allowlist", "only allowed with"),
        ({"sandbox": {"network": "egress-allowlist", "allowlist": ["*"]}}, "constraints.sandbox.allowlist", "any"),
        ({"sandbox": {"network": "egress-allowlist", "allowlist": []}}, "constraints.sandbox.allowlist", "non-empty"),
        ({"sandbox": {"isolated": "yes"}}, "constraints.sandbox.isolated", "true or false"),
        ({"sandbox": {"fs": "rwx"}}, "constraints.sandbox.fs", "unknown value"),
        ({"sandbox": {"fs": "rw", "read_write_paths": ["/tmp"]}}, "constraints.sandbox.read_write_paths", "fs: ro"),
        ({"sandbox": {"read_only_paths": ["/"]}}, "constraints.sandbox.read_only_paths[0]", "whole filesystem"),
        ({"sandbox": {"read_only_paths": []}}, "constraints.sandbox.read_only_paths", "non-empty"),
        ({"sandbox": {"mounts": []}}, "constraints.sandbox.mounts", "unknown key"),
        ({"tools": "git"}, "constraints.tools", "list of strings"),
        ({"commands": ["ls", ""]}, "constraints.commands[1]", "non-empty string"),
        ({"diff": {"max_lines": 0}}, "constraints.diff.max_lines", "from 1"),
        ({"diff": {"deny_paths": []}}, "constraints.diff.deny_paths", "non-empty"),
        ({"diff": {"paths": ["x"]}}, "constraints.diff.paths", "unknown key"),
        ({"redaction_level": "max"}, "constraints.redaction_level", "none, standard, strict"),
    ],
)
def test_bad_constraints_name_file_rule_and_field(value: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        constraints_of(value)
    message = str(info.value)
    assert "'c.yaml'" in message and "rules[0] (id 'r')" in message, message
    assert f"field {field!r}" in message and problem in message, message


# --- merging: examples ------------------------------------------------------------------------------


def test_merge_takes_the_most_restrictive_of_each_field() -> None:
    a = constraints_of(
        {
            "budgets": {"max_runtime_ms": 100, "max_retries": 3},
            "sandbox": {"network": "egress-allowlist", "allowlist": ["a", "b"], "read_write_paths": ["/tmp", "/w"]},
            "tools": ["git", "go"],
            "diff": {"max_files": 5, "deny_paths": ["a/**"]},
            "redaction_level": "standard",
        }
    )
    b = constraints_of(
        {
            "budgets": {"max_runtime_ms": 50, "max_artifact_bytes": 10},
            "sandbox": {"network": "egress-allowlist", "allowlist": ["b", "c"], "read_only_paths": ["/w"]},
            "tools": ["go", "make"],
            "commands": ["ls"],
            "diff": {"max_lines": 9, "deny_paths": ["b/**"]},
            "redaction_level": "none",
        }
    )
    assert a.merge(b) == Constraints(
        budgets=Budgets(max_runtime_ms=50, max_retries=3, max_artifact_bytes=10),
        sandbox=Sandbox(
            network=Network.EGRESS_ALLOWLIST,
            allowlist=("b",),
            fs=FsMode.RO,
            read_only_paths=("/w",),
            read_write_paths=("/tmp",),
        ),
        tools=("go",),
        commands=("ls",),
        diff=DiffLimits(max_files=5, max_lines=9, deny_paths=("a/**", "b/**")),
        redaction_level=RedactionLevel.STANDARD,
    )


def test_disjoint_egress_allowlists_leave_no_network() -> None:
    a = constraints_of({"sandbox": {"network": "egress-allowlist", "allowlist": ["a"]}})
    b = constraints_of({"sandbox": {"network": "egress-allowlist", "allowlist": ["b"]}})
    assert a.merge(b).sandbox == Sandbox(isolated=True, network=Network.NONE)


def test_disjoint_tool_allowlists_allow_nothing_and_unset_allows_everything() -> None:
    git, make = constraints_of({"tools": ["git"]}), constraints_of({"tools": ["make"]})
    assert git.merge(make).tools == ()
    assert git.merge(constraints_of({"commands": ["ls"]})).tools == ("git",)


def test_fs_ro_without_writable_paths_stays_read_only_after_merge() -> None:
    read_only = constraints_of({"sandbox": {"fs": "ro"}})
    tmp_only = constraints_of({"sandbox": {"read_write_paths": ["/tmp"]}})
    assert read_only.merge(tmp_only).sandbox.read_write_paths == ()


# --- merging: properties ----------------------------------------------------------------------------

_opt_cap = st.none() | st.integers(1, 5)
_subset = st.lists(st.sampled_from(["a", "b", "c"]), unique=True)


@st.composite
def constraint_sets(draw: st.DrawFn) -> Constraints:
    network = draw(st.sampled_from([None, Network.NONE, Network.EGRESS_ALLOWLIST, Network.ANY]))
    allowlist = draw(_subset.filter(bool)) if network is Network.EGRESS_ALLOWLIST else []
    fs = draw(st.sampled_from([None, FsMode.RO, FsMode.RW]))
    return Constraints(
        budgets=Budgets(draw(_opt_cap), draw(_opt_cap), draw(_opt_cap), draw(_opt_cap)),
        sandbox=Sandbox(
            isolated=draw(st.booleans()),
            network=network,
            allowlist=tuple(allowlist),
            fs=fs,
            read_only_paths=tuple(draw(_subset)),
            read_write_paths=tuple(draw(_subset)) if fs is FsMode.RO or (fs is None and draw(st.booleans())) else None,
        ),
        tools=draw(st.none() | _subset.map(tuple)),
        commands=draw(st.none() | _subset.map(tuple)),
        diff=DiffLimits(draw(_opt_cap), draw(_opt_cap), tuple(draw(_subset))),
        redaction_level=draw(st.none() | st.sampled_from(list(RedactionLevel))),
    )


@hyp_settings(max_examples=300, database=None, deadline=None)
@given(a=constraint_sets(), b=constraint_sets(), c=constraint_sets())
def test_merge_is_commutative_associative_and_never_looser(a: Constraints, b: Constraints, c: Constraints) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    merged = merge_all([a, b, c])
    for part in (a, b, c):
        assert merged.at_least_as_strict_as(part)
    assert a.merge(a) == a
    assert a.merge(NO_CONSTRAINTS) == a == NO_CONSTRAINTS.merge(a)
    assert a.at_least_as_strict_as(NO_CONSTRAINTS)


@hyp_settings(max_examples=300, database=None, deadline=None)
@given(a=constraint_sets(), b=constraint_sets())
def test_strictness_is_a_real_order(a: Constraints, b: Constraints) -> None:
    assert a.at_least_as_strict_as(a)
    if a.at_least_as_strict_as(b) and b.at_least_as_strict_as(a):
        assert a == b
    # the merge is the loosest set that is at least as strict as both
    if a.at_least_as_strict_as(b):
        assert a.merge(b) == a


def test_strictness_detects_a_looser_set() -> None:
    tight = constraints_of({"budgets": {"max_retries": 1}, "tools": ["git"], "sandbox": {"network": "none"}})
    assert not constraints_of({"budgets": {"max_retries": 2}}).at_least_as_strict_as(tight)
    assert not constraints_of({"tools": ["git", "go"]}).at_least_as_strict_as(tight)
    assert not constraints_of({"sandbox": {"network": "any"}}).at_least_as_strict_as(tight)
    assert tight.at_least_as_strict_as(constraints_of({"tools": ["git", "go"]}))


# --- in decisions -----------------------------------------------------------------------------------


def rules_policy(*rules: dict[str, Any]) -> PolicySet:
    return PolicySet.from_sources([("p.yaml", yaml.safe_dump({"version": 1, "rules": list(rules)}))])


def test_constraints_of_all_matching_rules_merge_into_the_decision() -> None:
    ps = rules_policy(
        {
            "id": "a",
            "match": {"topics": ["job.*"]},
            "decision": "allow",
            "reason": "a",
            "constraints": {"tools": ["git", "go"]},
        },
        {
            "id": "b",
            "match": {"topics": ["job.repo.*"]},
            "decision": "allow_with_constraints",
            "reason": "b",
            "constraints": {"tools": ["go"], "budgets": {"max_runtime_ms": 5}},
        },
        {"id": "c", "match": {"topics": ["job.*"]}, "decision": "allow", "reason": "c"},
        {
            "id": "z-advisory",
            "match": {"topics": ["job.*"]},
            "decision": "allow",
            "reason": "z",
            "enforcement": "advisory",
            "constraints": {"tools": []},
        },
        {
            "id": "z-shadow",
            "match": {"topics": ["job.*"]},
            "decision": "allow",
            "reason": "z",
            "enforcement": "shadow",
            "constraints": {"tools": []},
        },
    )
    repo = ps.evaluate(PolicyRequest(topic="job.repo.push"))
    assert (repo.kind, repo.rule_id) == (DecisionKind.ALLOW_WITH_CONSTRAINTS, "b")
    assert repo.constraints == Constraints(budgets=Budgets(max_runtime_ms=5), tools=("go",))
    # an allow that carries constraints becomes allow_with_constraints; advisory and shadow ones do not count
    other = ps.evaluate(PolicyRequest(topic="job.echo"))
    assert (other.kind, other.rule_id, other.constraints) == (
        DecisionKind.ALLOW_WITH_CONSTRAINTS,
        "a",
        Constraints(tools=("git", "go")),
    )
    assert "constraints: " in ps.explain(PolicyRequest(topic="job.echo")).summary()


def test_deny_carries_no_constraints_and_throttle_keeps_them() -> None:
    limits = {"budgets": {"max_retries": 1}}
    ps = rules_policy(
        {"id": "a", "match": {"topics": ["job.*"]}, "decision": "allow", "reason": "a", "constraints": limits},
        {"id": "d", "match": {"topics": ["job.danger.*"]}, "decision": "deny", "reason": "d"},
        {"id": "t", "match": {"topics": ["job.slow.*"]}, "decision": "throttle", "reason": "t"},
    )
    assert ps.evaluate(PolicyRequest(topic="job.danger.x")).constraints == NO_CONSTRAINTS
    throttled = ps.evaluate(PolicyRequest(topic="job.slow.x"))
    assert throttled.kind is DecisionKind.THROTTLE and throttled.constraints.budgets.max_retries == 1


# --- the CAP wire mapping ---------------------------------------------------------------------------


@hyp_settings(max_examples=300, database=None, deadline=None)
@given(a=constraint_sets())
def test_wire_mapping_round_trips(a: Constraints) -> None:
    wire = constraints_to_wire(a)
    again = safety_pb2.PolicyConstraints.FromString(wire.SerializeToString())
    assert constraints_from_wire(again) == a


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"sandbox": {"network": "none"}}, "sandbox { isolated: true }"),
        ({"sandbox": {"network": "any"}}, 'sandbox { network_allowlist: "*" }'),
        ({"sandbox": {"fs": "ro"}}, 'sandbox { fs_read_only: "/" }'),
        ({"sandbox": {"fs": "rw"}}, 'sandbox { fs_read_write: "/" }'),
        ({"tools": []}, f'toolchain {{ allowed_tools: "{WIRE_NOTHING_ALLOWED}" }}'),
        ({"redaction_level": "standard"}, 'redaction_level: "standard"'),
        ({"budgets": {"max_retries": 2}}, "budgets { max_retries: 2 }"),
    ],
)
def test_wire_mapping_spelling(value: dict[str, Any], expected: str) -> None:
    wire = constraints_to_wire(constraints_of(value))
    assert " ".join(str(wire).split()) == expected


def test_wire_from_a_peer_fails_closed_on_unknown_values() -> None:
    peer = safety_pb2.PolicyConstraints(
        redaction_level="paranoid", sandbox=safety_pb2.SandboxProfile(fs_read_write=["/tmp"])
    )
    parsed = constraints_from_wire(peer)
    assert parsed.redaction_level is RedactionLevel.STRICT
    assert parsed.sandbox.fs is FsMode.RO and parsed.sandbox.read_write_paths == ("/tmp",)


def test_response_sets_constraints_only_when_there_are_some() -> None:
    ps = rules_policy(
        {"id": "a", "match": {"topics": ["job.a"]}, "decision": "allow", "reason": "a"},
        {
            "id": "b",
            "match": {"topics": ["job.b"]},
            "decision": "allow",
            "reason": "b",
            "constraints": {"tools": ["git"]},
        },
    )
    plain = response_from_decision(ps.evaluate(PolicyRequest(topic="job.a")))
    assert plain.decision == safety_pb2.DECISION_TYPE_ALLOW and not plain.HasField("constraints")
    constrained = response_from_decision(ps.evaluate(PolicyRequest(topic="job.b")))
    assert constrained.decision == safety_pb2.DECISION_TYPE_ALLOW_WITH_CONSTRAINTS
    assert list(constrained.constraints.toolchain.allowed_tools) == ["git"]
    assert not constrained.constraints.HasField("budgets")
