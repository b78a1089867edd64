"""Workflow expressions: step conditions and ``${...}`` input templates, in CEL (cel-python).

The same safe, non-Turing-complete language as policy ``when`` clauses; never ``eval``. An
expression sees these variables (absent ones are simply not bound):

    input                 the run's input
    steps.<id>.output     a finished step's output (``null`` until it has one)
    steps.<id>.status     ``pending``, ``running``, ``succeeded``, ``skipped`` ...
    run                   ``{"id", "tenant", "workflow", "version", "dry_run", "started_by"}``
    item, index           the element and its position, inside a ``for_each`` step

Functions: CEL's standard ones (``size``, ``contains``, ``startsWith``, ``endsWith``, ``matches``,
``in``, ``has``, list macros ``all``/``exists``/``map``/``filter``) plus the strings extension's
``lowerAscii``, ``upperAscii``, ``trim``, ``replace``, ``split``, ``join``, ``indexOf`` and
``substring`` (:data:`STRING_FUNCTIONS`).

Templates: a string that is exactly ``"${expr}"`` becomes the expression's value with its type
(a list stays a list); ``${...}`` inside a longer string is interpolated as text. Templates are
applied recursively through lists and maps. Every expression is compiled once (cached by text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from coretex.errors import CoretexError
from coretex.model.canonical import canonical_json
from coretex.model.cel import compiling, position

MAX_EXPRESSION_CHARS = 4096
TEMPLATE = re.compile(r"\$\{((?:[^}\"']|\"[^\"]*\"|'[^']*')*)\}")
"""``${ ... }``; braces inside quoted CEL strings do not end the template."""


class ExpressionError(CoretexError):
    """An expression that does not compile or fails when evaluated; the message says where."""

    code = "expression_error"


@dataclass(frozen=True)
class Expression:
    source: str
    _program: Any

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The expression's value as plain JSON-like Python; raise :class:`ExpressionError`."""
        activation = {name: json_to_cel(value) for name, value in variables.items()}
        try:
            value = self._program.evaluate(activation)
        except CELEvalError as exc:
            raise ExpressionError(f"expression {self.source!r} failed: {_eval_message(exc)}") from None
        except Exception as exc:  # cel-python's own bugs must not crash the engine
            raise ExpressionError(f"expression {self.source!r} failed: {type(exc).__name__}: {exc}") from None
        if isinstance(value, CELEvalError):
            raise ExpressionError(f"expression {self.source!r} failed: {_eval_message(value)}")
        return to_python(value)


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile ``source`` once; raise :class:`ExpressionError` naming the position of a syntax error."""
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if not source.strip():
        raise ExpressionError("expression is empty")
    with compiling() as env:
        try:
            ast = env.compile(source)
        except CELParseError as exc:
            raise ExpressionError(
                f"expression {source!r} does not compile: syntax error at {position(exc.line, exc.column)}"
            ) from None
        return Expression(source, env.program(ast, functions=STRING_FUNCTIONS))


def evaluate(source: str, variables: Mapping[str, Any]) -> Any:
    return compile_expression(source).evaluate(variables)


def evaluate_bool(source: str, variables: Mapping[str, Any]) -> bool:
    value = evaluate(source, variables)
    if not isinstance(value, bool):
        raise ExpressionError(f"expression {source!r} must give a bool, got {type(value).__name__} {value!r}")
    return value


def template_sources(value: Any) -> list[str]:
    """Every ``${...}`` expression inside ``value`` (strings, lists and maps), in order."""
    if isinstance(value, str):
        return [m.group(1) for m in TEMPLATE.finditer(value)]
    if isinstance(value, list):
        return [s for item in value for s in template_sources(item)]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in template_sources(item)]
    return []


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """``value`` with every template replaced (see the module docstring); raise :class:`ExpressionError`."""
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value)
        if whole:
            return evaluate(whole.group(1), variables)
        return TEMPLATE.sub(lambda m: _as_text(evaluate(m.group(1), variables)), value)
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    if isinstance(value, Mapping):
        return {key: render(item, variables) for key, item in value.items()}
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return canonical_json(value)
    return str(value)


def to_python(value: Any) -> Any:
    """CEL values to plain JSON-like Python (bool, int, float, str, list, dict, None)."""
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType | int):
        return int(value)
    if isinstance(value, celtypes.DoubleType | float):
        return float(value)
    if isinstance(value, celtypes.StringType | str):
        return str(value)
    if isinstance(value, celtypes.BytesType | bytes):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, celtypes.ListType | list | tuple):
        return [to_python(item) for item in value]
    if isinstance(value, celtypes.MapType | dict):
        return {str(to_python(k)): to_python(v) for k, v in value.items()}
    if value is None:
        return None
    return str(value)  # timestamps and durations


def _eval_message(exc: CELEvalError) -> str:
    args = exc.args
    message = str(args[0]) if args else "evaluation error"
    return message.split(" (in activation", 1)[0]  # celpy appends a dump of every variable and function


def _join(items: Any, separator: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(separator).join(str(to_python(i)) for i in items))


STRING_FUNCTIONS: dict[str, Any] = {
    # CEL's strings extension (cel-go ext.Strings), beyond the standard size/contains/startsWith/
    # endsWith/matches: "x".upperAscii(), "a,b".split(","), ["a", "b"].join("-") ...
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
    "trim": lambda s: celtypes.StringType(str(s).strip()),
    "replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new))),
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))]),
    "join": _join,
    "indexOf": lambda s, sub: celtypes.IntType(str(s).find(str(sub))),
    "substring": lambda s, start, end=None: celtypes.StringType(
        str(s)[int(start):] if end is None else str(s)[int(start):int(end)]),
}
"""String functions of CEL's strings extension, which cel-python does not ship."""
