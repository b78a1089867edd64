"""CEL conditions and ${...} templates of workflow steps."""

from __future__ import annotations

from typing import Any

import pytest

from coretex.workflow.expressions import (
    MAX_EXPRESSION_CHARS,
    ExpressionError,
    compile_expression,
    evaluate,
    evaluate_bool,
    render,
    template_sources,
)

VARIABLES: dict[str, Any] = {
    "input": {"n": 3, "name": "web", "tags": ["a", "b"], "flag": True, "nested": {"x": {"y": [10, 20]}},
              "ratio": 0.5, "nothing": None},
    "steps": {"build": {"status": "succeeded", "output": {"image": "img:1", "size": 42}, "output_ptr": "p"},
              "lint": {"status": "skipped", "output": None, "output_ptr": ""}},
    "run": {"id": "run-1", "tenant": "acme", "workflow": "wf", "version": 2, "dry_run": False, "started_by": "al"},
}


# -- templates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("template,expected", [
    ("${input.n}", 3),
    ("${input.tags}", ["a", "b"]),
    ("${input.flag}", True),
    ("${input.ratio}", 0.5),
    ("${input.nested}", {"x": {"y": [10, 20]}}),
    ("${input.nothing}", None),
    ("${ input.n + 1 }", 4),
    ("${steps.build.output}", {"image": "img:1", "size": 42}),
])
def test_whole_string_template_keeps_the_type(template: str, expected: Any) -> None:
    value = render(template, VARIABLES)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("template,expected", [
    ("n=${input.n}", "n=3"),
    ("${input.name}-${input.n}", "web-3"),
    ("flag is ${input.flag}", "flag is true"),
    ("none:${input.nothing}.", "none:."),
    ("tags ${input.tags}", 'tags ["a","b"]'),
    ("map ${input.nested}", 'map {"x":{"y":[10,20]}}'),
    ("no template here", "no template here"),
    ("$input.n {input.n}", "$input.n {input.n}"),
])
def test_interpolation_as_text(template: str, expected: str) -> None:
    assert render(template, VARIABLES) == expected


def test_templates_apply_through_nested_lists_and_maps() -> None:
    value = {"a": ["${input.n}", {"b": "img=${steps.build.output.image}", "c": ["${input.tags}"]}],
             "d": 7, "e": None, "f": True}
    assert render(value, VARIABLES) == {"a": [3, {"b": "img=img:1", "c": [["a", "b"]]}], "d": 7, "e": None,
                                        "f": True}


def test_render_does_not_modify_its_argument() -> None:
    value = {"a": ["${input.n}"]}
    render(value, VARIABLES)
    assert value == {"a": ["${input.n}"]}


@pytest.mark.parametrize("template,expected", [
    ("${'a}b'}", "a}b"),
    ('${"}" + input.name}', "}web"),
    ("x${'{' + '}'}y", "x{}y"),
    ("${input.name + '}'}", "web}"),
])
def test_braces_inside_quoted_strings_do_not_end_a_template(template: str, expected: str) -> None:
    assert render(template, VARIABLES) == expected


def test_template_sources_in_order_through_structures() -> None:
    value = {"a": "${x} and ${'}'}", "b": [1, "${y.z}", {"c": "${w}"}], "d": 3}
    assert template_sources(value) == ["x", "'}'", "y.z", "w"]
    assert template_sources("plain") == [] and template_sources(None) == [] and template_sources(5) == []


# -- conditions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source,expected", [
    ("input.n > 2", True),
    ("input.n > 2 && input.name == 'web'", True),
    ("!input.flag || input.n == 0", False),
    ("'a' in input.tags", True),
    ("size(input.tags) == 2", True),
    ("input.name.startsWith('w')", True),
    ("input.name.contains('x')", False),
    ("input.nested.x.y[1] == 20", True),
    ("steps.build.status == 'succeeded'", True),
    ("steps.lint.status == 'skipped' && steps.lint.output == null", True),
    ("steps.build.output.size >= 42", True),
    ("run.id == 'run-1' && run.tenant == 'acme' && !run.dry_run", True),
    ("run.version == 2 && run.started_by == 'al'", True),
    ("input.tags.exists(t, t == 'b')", True),
    ("input.tags.all(t, t.size() == 1)", True),
])
def test_conditions(source: str, expected: bool) -> None:
    assert evaluate_bool(source, VARIABLES) is expected


@pytest.mark.parametrize("source", ["input.n", "input.name", "input.tags", "null", "input.nested"])
def test_condition_must_give_a_bool(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate_bool(source, VARIABLES)
    assert repr(source) in str(caught.value) and "must give a bool" in str(caught.value)


def test_item_and_index_variables() -> None:
    variables = {**VARIABLES, "item": {"host": "h2"}, "index": 1}
    assert render({"host": "${item.host}", "n": "${index}", "s": "#${index}:${item.host}"}, variables) == \
        {"host": "h2", "n": 1, "s": "#1:h2"}
    assert evaluate_bool("index == 1 && item.host == 'h2'", variables) is True


def test_absent_variable_is_an_error_naming_the_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate("item.host", VARIABLES)
    assert "'item.host'" in str(caught.value)


@pytest.mark.parametrize("source", [
    "input.missing",
    "input.tags[5]",
    "input.n / 0",
    "steps.ghost.output",
    "input.name + 1",
])
def test_evaluation_errors_name_the_expression(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate(source, VARIABLES)
    assert repr(source) in str(caught.value) and "failed" in str(caught.value)


def test_template_evaluation_error_names_the_inner_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        render({"a": ["ok ${input.n}", "bad ${input.ghost}"]}, VARIABLES)
    assert "'input.ghost'" in str(caught.value)


@pytest.mark.parametrize("source", ["1 +", "input.", "a b", "(1"])
def test_syntax_errors_name_the_position(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    message = str(caught.value)
    assert repr(source) in message and "does not compile" in message
    assert "line 1" in message and "column " in message and "column ?" not in message


def test_syntax_error_position_points_at_the_problem() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("input.n > 1 && && true")
    column = int(str(caught.value).rsplit("column ", 1)[1])
    assert 12 <= column <= 16


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_expression(source: str) -> None:
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression(source)


def test_overlong_expression() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression("1 + " * MAX_EXPRESSION_CHARS + "1")


def test_compile_is_cached_by_text() -> None:
    assert compile_expression("input.n + 40") is compile_expression("input.n + 40")
    assert compile_expression("input.n + 40").evaluate(VARIABLES) == 43


def test_expression_error_code() -> None:
    assert ExpressionError.code == "expression_error"


def test_values_come_back_as_plain_python() -> None:
    value = evaluate("{'a': [1, 2.5, 'x', true, null], 'b': {'c': 1u}}", {})
    assert value == {"a": [1, 2.5, "x", True, None], "b": {"c": 1}}
    assert type(value) is dict and type(value["a"]) is list and type(value["a"][0]) is int
    assert type(value["a"][2]) is str and type(value["a"][3]) is bool and type(value["b"]["c"]) is int
