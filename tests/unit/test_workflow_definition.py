"""parse_workflow: the shape and meaning of a workflow document, every problem reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from coretex.workflow.definition import (
    Problem,
    RetryPolicy,
    WorkflowInvalidError,
    fields_for_other_types,
    parse_instant,
    parse_workflow,
    strip_template,
)


def worker(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "worker", "topic": f"job.{step_id}", **fields}


def problems_of(document: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(WorkflowInvalidError) as caught:
        parse_workflow(document, **kwargs)
    assert caught.value.problems, "WorkflowInvalidError without problems"
    assert caught.value.code == "workflow_invalid"
    return caught.value.problems


def paths(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


def find(problems: list[Problem], path: str) -> Problem:
    matches = [p for p in problems if p.path == path]
    assert matches, f"no problem at {path}: {problems}"
    return matches[0]


# -- a valid document -----------------------------------------------------------------------------


def test_full_document_parses_into_typed_steps() -> None:
    document = {
        "id": "deploy-service",
        "tenant": "acme",
        "name": "Deploy",
        "description": "Build then deploy",
        "version": 3,
        "timeout_sec": 3600,
        "labels": {"team": "infra"},
        "input_schema": {"type": "object"},
        "output": {"url": "${steps.deploy.output.url}"},
        "steps": [
            worker("build", input={"ref": "${input.ref}"},
                   retry={"max_attempts": 3, "initial_backoff_sec": 2, "max_backoff_sec": 30, "multiplier": 3,
                          "jitter": 0.5, "retry_on": ["flaky"]},
                   timeout_sec=60, meta={"actor_id": "ci", "actor_type": "service", "risk_tags": ["prod"],
                                         "requires": ["docker"], "labels": {"a": "b"}, "pack_id": "p",
                                         "capability": "build", "idempotency_key": "k"}),
            {"id": "gate", "type": "approval", "depends_on": ["build"], "approvers": ["ops", "sec"], "quorum": 2,
             "allow_self_approval": True, "expires_after_sec": 600, "on_expiry": "skip"},
            {"id": "pause", "type": "delay", "depends_on": ["gate"], "delay_sec": 5},
            {"id": "check", "type": "condition", "depends_on": ["pause"], "expression": "${input.ref != ''}"},
            worker("deploy", depends_on=["check"], condition="${steps.check.output}", on_failure="continue",
                   for_each="input.targets", max_parallel=2),
            {"id": "tell", "type": "notify", "depends_on": ["deploy"], "level": "WARNING", "message": "done",
             "code": "deploy.done"},
        ],
    }
    workflow = parse_workflow(document)
    assert workflow.id == "deploy-service" and workflow.tenant == "acme" and workflow.version == 3
    assert workflow.timeout_sec == 3600 and workflow.labels == {"team": "infra"}
    assert list(workflow.steps) == ["build", "gate", "pause", "check", "deploy", "tell"]
    build = workflow.steps["build"]
    assert build.retry == RetryPolicy(3, 2, 30, 3, 0.5, ("flaky",))
    assert build.meta.risk_tags == ("prod",) and build.meta.requires == ("docker",)
    assert build.meta.actor_type == "service" and build.meta.labels == {"a": "b"}
    assert build.timeout_sec == 60 and build.on_failure == "fail_run"
    gate = workflow.steps["gate"]
    assert gate.approvers == ("ops", "sec") and gate.quorum == 2 and gate.allow_self_approval
    assert gate.on_expiry == "skip" and gate.expires_after_sec == 600
    # "${...}" around a condition, for_each or expression is accepted and stripped
    assert workflow.steps["check"].expression == "input.ref != ''"
    assert workflow.steps["deploy"].condition == "steps.check.output"
    assert workflow.steps["deploy"].for_each == "input.targets"
    assert workflow.steps["deploy"].on_failure == "continue"
    assert workflow.steps["tell"].level == "WARNING" and workflow.steps["tell"].code == "deploy.done"
    assert workflow.order == ("build", "gate", "pause", "check", "deploy", "tell")
    assert workflow.document is document


def test_defaults() -> None:
    workflow = parse_workflow({"id": "w", "steps": [worker("a")]})
    step = workflow.steps["a"]
    assert workflow.tenant == "default" and workflow.timeout_sec == 0 and workflow.output is None
    assert step.retry == RetryPolicy() and step.retry.max_attempts == 1
    assert step.on_failure == "fail_run" and step.depends_on == () and step.condition == ""
    assert step.max_parallel == 0 and step.quorum == 1 and step.on_expiry == "reject"


def test_map_form_uses_keys_as_ids() -> None:
    workflow = parse_workflow({"id": "w", "steps": {
        "b": {"type": "worker", "topic": "t", "depends_on": ["a"]},
        "a": {"type": "worker", "topic": "t"},
        "c": {"id": "c", "type": "notify", "message": "m", "depends_on": ["b"]},
    }})
    assert list(workflow.steps) == ["b", "a", "c"]
    assert workflow.steps["b"].id == "b" and workflow.steps["b"].depends_on == ("a",)
    assert workflow.order == ("a", "b", "c")


def test_map_form_id_must_match_key() -> None:
    problems = problems_of({"id": "w", "steps": {"a": {"id": "b", "type": "worker", "topic": "t"}}})
    assert "differs from its key" in find(problems, "/steps/a/id").message


def test_map_form_key_must_be_an_identifier() -> None:
    problems = problems_of({"id": "w", "steps": {"bad-id": {"type": "worker", "topic": "t"}}})
    assert "must match" in find(problems, "/steps/bad-id").message


@pytest.mark.parametrize("deps", [
    {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
    {"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []},
    {"e": ["d"], "d": ["c"], "c": ["b"], "b": ["a"], "a": []},
    {"x": [], "y": [], "z": ["y", "x"]},
])
def test_order_is_topological(deps: dict[str, list[str]]) -> None:
    workflow = parse_workflow({"id": "w", "steps": {k: {"type": "worker", "topic": "t", "depends_on": v}
                                                    for k, v in deps.items()}})
    assert sorted(workflow.order) == sorted(deps)
    for step_id, step_deps in deps.items():
        for dep in step_deps:
            assert workflow.order.index(dep) < workflow.order.index(step_id)


def test_dependants_and_downstream() -> None:
    workflow = parse_workflow({"id": "w", "steps": [worker("a"), worker("b", depends_on=["a"]),
                                                    worker("c", depends_on=["b"]), worker("d")]})
    assert workflow.dependants("a") == ["b"]
    assert workflow.downstream("a") == {"a", "b", "c"}
    assert workflow.downstream("d") == {"d"}


def test_schema_ids_lists_registry_references() -> None:
    workflow = parse_workflow({"id": "w", "input_schema": "acme.in@1", "steps": [
        worker("a", input_schema="acme.a-in", output_schema={"type": "object"}),
        worker("b", output_schema="acme.b-out@2"),
    ]})
    assert workflow.schema_ids() == {"acme.in@1", "acme.a-in", "acme.b-out@2"}


# -- problems -------------------------------------------------------------------------------------


def test_unknown_step_type() -> None:
    problems = problems_of({"id": "w", "steps": [{"id": "a", "type": "shell"}]})
    assert paths(problems) == ["/steps/0/type"]
    assert "'shell'" in problems[0].message


def test_unknown_step_type_map_form() -> None:
    problems = problems_of({"id": "w", "steps": {"a": {"type": "shell"}}})
    assert paths(problems) == ["/steps/a/type"]


def test_unknown_key_on_a_step() -> None:
    problems = problems_of({"id": "w", "steps": [worker("a", tpoic="x")]})
    assert len(problems) == 1
    assert problems[0].path == "/steps/0" and "tpoic" in problems[0].message


def test_unknown_key_at_the_top() -> None:
    problems = problems_of({"id": "w", "stepz": [], "steps": [worker("a")]})
    assert any("stepz" in p.message for p in problems)


@pytest.mark.parametrize("document", [
    None,
    [],
    {"steps": [{"id": "a", "type": "worker", "topic": "t"}]},
    {"id": "w"},
    {"id": "w", "steps": []},
    {"id": "w", "steps": {}},
    {"id": "W!", "steps": [{"id": "a", "type": "worker", "topic": "t"}]},
    {"id": "w", "timeout_sec": 0, "steps": [{"id": "a", "type": "worker", "topic": "t"}]},
    {"id": "w", "steps": [{"type": "worker", "topic": "t"}]},
    {"id": "w", "steps": [{"id": "a", "type": "worker", "topic": "t", "retry": {"max_attempts": 0}}]},
    {"id": "w", "steps": [{"id": "a", "type": "worker", "topic": "t", "retry": {"jitter": 2}}]},
    {"id": "w", "steps": [{"id": "a", "type": "worker", "topic": "t", "on_failure": "ignore"}]},
    {"id": "w", "steps": [{"id": "a", "type": "approval", "approvers": ["x"], "on_expiry": "approve"}]},
    {"id": "w", "steps": [{"id": "a", "type": "notify", "message": "m", "level": "DEBUG"}]},
])
def test_shape_problems(document: Any) -> None:
    assert problems_of(document)


def test_dangling_depends_on() -> None:
    problems = problems_of({"id": "w", "steps": [worker("a", depends_on=["ghost"])]})
    problem = find(problems, "/steps/0/depends_on")
    assert "ghost" in problem.message


def test_self_dependency() -> None:
    problems = problems_of({"id": "w", "steps": [worker("a", depends_on=["a"])]})
    assert "itself" in find(problems, "/steps/0/depends_on").message
    assert not any("cycle" in p.message for p in problems), "a self-dependency is reported once, as such"


def test_cycle_is_named() -> None:
    problems = problems_of({"id": "w", "steps": [
        worker("a", depends_on=["c"]), worker("b", depends_on=["a"]), worker("c", depends_on=["b"]),
        worker("free"),
    ]})
    problem = find(problems, "/steps")
    assert "cycle" in problem.message
    cycle = problem.message.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]


def test_two_step_cycle_map_form() -> None:
    problems = problems_of({"id": "w", "steps": {"x": {"type": "worker", "topic": "t", "depends_on": ["y"]},
                                                 "y": {"type": "worker", "topic": "t", "depends_on": ["x"]}}})
    message = find(problems, "/steps").message
    assert "x" in message and "y" in message and "cycle" in message


def test_bad_condition_expression_names_position() -> None:
    problems = problems_of({"id": "w", "steps": [worker("a", condition="input.x >")]})
    message = find(problems, "/steps/0/condition").message
    assert "input.x >" in message and "line 1" in message and "column" in message


@pytest.mark.parametrize("key,value,path", [
    ("input", {"x": ["${input.}"]}, "/steps/0/input"),
    ("for_each", "[1, 2", "/steps/0/for_each"),
])
def test_bad_template_or_for_each(key: str, value: Any, path: str) -> None:
    problems = problems_of({"id": "w", "steps": [worker("a", **{key: value})]})
    assert "does not compile" in find(problems, path).message


def test_bad_expressions_in_condition_step_notify_and_output() -> None:
    problems = problems_of({"id": "w", "output": {"o": "${steps.a.output +}"}, "steps": [
        {"id": "a", "type": "condition", "expression": "1 = 1"},
        {"id": "b", "type": "notify", "message": "hi ${input.(}"},
        {"id": "c", "type": "delay", "delay_until": "${'2030' +}"},
    ]})
    for path in ("/output", "/steps/0/expression", "/steps/1/message", "/steps/2/delay_until"):
        assert "does not compile" in find(problems, path).message


def test_unknown_schema_id_via_callback() -> None:
    known = {"acme.in@1"}
    document = {"id": "w", "input_schema": "acme.in@1", "steps": [
        worker("a", input_schema="acme.missing@1", output_schema="acme.in@1"),
        worker("b", output_schema="acme.gone"),
    ]}
    problems = problems_of(document, schema_exists=known.__contains__)
    assert "acme.missing@1" in find(problems, "/steps/0/input_schema").message
    assert "acme.gone" in find(problems, "/steps/1/output_schema").message
    assert "/input_schema" not in paths(problems) and "/steps/0/output_schema" not in paths(problems)
    # without the callback, ids are only checked for shape
    assert parse_workflow(document).steps["b"].output_schema == "acme.gone"


def test_malformed_schema_id_and_invalid_inline_schema() -> None:
    problems = problems_of({"id": "w", "steps": [
        worker("a", input_schema="Not An Id!", output_schema={"type": "nonsense"}),
    ]})
    assert {"/steps/0/input_schema", "/steps/0/output_schema"} <= set(paths(problems))


def test_worker_without_topic() -> None:
    problems = problems_of({"id": "w", "steps": [{"id": "a", "type": "worker"}]})
    assert "topic" in find(problems, "/steps/0/topic").message


@pytest.mark.parametrize("step,path", [
    ({"id": "a", "type": "condition"}, "/steps/0/expression"),
    ({"id": "a", "type": "approval"}, "/steps/0/approvers"),
    ({"id": "a", "type": "notify"}, "/steps/0/message"),
])
def test_type_specific_required_fields(step: dict[str, Any], path: str) -> None:
    find(problems_of({"id": "w", "steps": [step]}), path)


def test_duplicate_ids_in_list_form() -> None:
    problems = problems_of({"id": "w", "steps": [worker("a"), worker("b"), worker("a")]})
    problem = find(problems, "/steps/2/id")
    assert "duplicate" in problem.message and "/steps/0" in problem.message
    assert "/steps/0/id" not in paths(problems)


@pytest.mark.parametrize("step,key", [
    (worker("a", approvers=["ops"]), "approvers"),
    (worker("a", delay_sec=3), "delay_sec"),
    ({"id": "a", "type": "delay", "delay_sec": 3, "topic": "t"}, "topic"),
    ({"id": "a", "type": "approval", "approvers": ["ops"], "input": {"x": 1}}, "input"),
    ({"id": "a", "type": "notify", "message": "m", "retry": {"max_attempts": 2}}, "retry"),
    ({"id": "a", "type": "condition", "expression": "true", "for_each": "input.xs"}, "for_each"),
    ({"id": "a", "type": "worker", "topic": "t", "level": "INFO"}, "level"),
])
def test_key_that_does_not_apply_to_the_step_type(step: dict[str, Any], key: str) -> None:
    problem = find(problems_of({"id": "w", "steps": [step]}), f"/steps/0/{key}")
    assert "does not apply" in problem.message


def test_keys_common_to_every_type_are_allowed() -> None:
    common = {"depends_on": ["z"], "condition": "true", "timeout_sec": 5, "on_failure": "continue"}
    workflow = parse_workflow({"id": "w", "steps": [
        worker("z"),
        worker("a", **common),
        {"id": "b", "type": "approval", "approvers": ["ops"], **common},
        {"id": "c", "type": "delay", "delay_sec": 1, **common},
        {"id": "d", "type": "condition", "expression": "true", **common},
        {"id": "e", "type": "notify", "message": "m", **common},
    ]})
    assert len(workflow.steps) == 6


def test_fields_for_other_types() -> None:
    assert fields_for_other_types({"topic": "t", "approvers": [], "delay_sec": 1, "depends_on": []},
                                  "worker") == ["approvers", "delay_sec"]
    assert fields_for_other_types({"message": "m", "level": "INFO"}, "notify") == []


@pytest.mark.parametrize("fields", [
    {"delay_sec": 5, "delay_until": "2030-01-01T00:00:00Z"},
    {},
    {"delay_sec": 0},
])
def test_delay_needs_exactly_one_of_sec_and_until(fields: dict[str, Any]) -> None:
    problem = find(problems_of({"id": "w", "steps": [{"id": "a", "type": "delay", **fields}]}), "/steps/0")
    assert "exactly one of delay_sec and delay_until" in problem.message


@pytest.mark.parametrize("fields", [
    {"delay_sec": 5},
    {"delay_until": "2030-01-01T00:00:00Z"},
    {"delay_until": "2030-01-01T02:00:00+02:00"},
    {"delay_until": "${input.when}"},
])
def test_valid_delays(fields: dict[str, Any]) -> None:
    assert parse_workflow({"id": "w", "steps": [{"id": "a", "type": "delay", **fields}]}).steps["a"].type == "delay"


@pytest.mark.parametrize("text", ["tomorrow", "2030-01-01T00:00:00"])
def test_delay_until_must_be_an_instant_with_a_zone(text: str) -> None:
    problem = find(problems_of({"id": "w", "steps": [{"id": "a", "type": "delay", "delay_until": text}]}),
                   "/steps/0/delay_until")
    assert "ISO 8601" in problem.message


def test_every_semantic_problem_is_reported_at_once() -> None:
    problems = problems_of({"id": "w", "steps": [
        {"id": "a", "type": "worker"},                                        # no topic
        worker("b", depends_on=["ghost"]),                                    # dangling
        worker("c", condition="1 +"),                                         # bad expression
        worker("d", output_schema="acme.nope@1"),                            # unknown schema
        worker("a"),                                                          # duplicate id
        worker("e", depends_on=["f"]), worker("f", depends_on=["e"]),        # cycle
        worker("g", depends_on=["g"]),                                        # self-dependency
        worker("h", approvers=["ops"]),                                       # key of another type
        {"id": "i", "type": "delay"},                                         # neither delay field
    ]}, schema_exists=lambda _: False)
    found = set(paths(problems))
    assert {"/steps/0/topic", "/steps/1/depends_on", "/steps/2/condition", "/steps/3/output_schema",
            "/steps/4/id", "/steps", "/steps/7/depends_on", "/steps/8/approvers", "/steps/9"} <= found
    assert str(problems[0].path) in str(WorkflowInvalidError(problems))


def test_error_message_joins_every_problem() -> None:
    error = WorkflowInvalidError([Problem("/a", "one"), Problem("", "two")])
    assert str(error) == "/a: one; <root>: two"
    assert Problem("/a", "one").as_dict() == {"path": "/a", "message": "one"}


def test_every_shape_problem_inside_steps_is_reported() -> None:
    problems = problems_of({"id": "w", "steps": [
        worker("a", bogus=1),
        {"id": "b", "type": "shell"},
    ]})
    assert {"/steps/0", "/steps/1/type"} <= set(paths(problems))


def test_unknown_type_and_dangling_dependency_reported_together() -> None:
    problems = problems_of({"id": "w", "steps": [
        {"id": "a", "type": "shell"},
        worker("b", depends_on=["ghost"]),
    ]})
    assert {"/steps/0/type", "/steps/1/depends_on"} <= set(paths(problems))


# -- small helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("${ a.b }", "a.b"), ("a.b", "a.b"), ("  ${x}  ", "x"), ("", ""), ("x ${y}", "x ${y}"),
])
def test_strip_template(text: str, expected: str) -> None:
    assert strip_template(text) == expected


def test_parse_instant() -> None:
    assert parse_instant("1970-01-01T00:01:00Z") == 60.0
    assert parse_instant("1970-01-01T01:01:00+01:00") == 60.0
    assert parse_instant("1970-01-01T00:01:00") is None
    assert parse_instant("not a time") is None
