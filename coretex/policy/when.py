"""``when`` clauses: CEL expressions over the request, compiled once when a bundle is parsed.

A rule's ``match.when`` is a CEL expression (cel-python; never ``eval``) that must produce a
bool. It sees one variable, ``request``, a map with :data:`~coretex.policy.request.REQUEST_FIELDS`
(``request.topic``, ``request.labels["env"]``, ``"prod" in request.risk_tags``,
``request.estimated_cost > 10.0`` ...). ``request.<name>`` with an unknown name is a compile error.

The evaluator runs a ``when`` only after every structured key of its rule matched, because CEL
costs about 0.3 ms per evaluation against microseconds for the rest of the rule.

A runtime error (a missing label, a non-bool result, ...) never raises: :meth:`WhenClause.evaluate`
reports it and the evaluator fails closed (see :mod:`coretex.policy.evaluator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celpy import Expression  # the parse tree type (a lark Tree); lark itself stays celpy's business
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

from coretex.errors import PolicyError
from coretex.model.cel import compiling, position
from coretex.policy.request import REQUEST_FIELDS, PolicyRequest

MAX_WHEN_CHARS = 4096
"""Longest accepted expression: keeps compile and evaluation time bounded."""


class WhenExpressionError(PolicyError):
    """A ``when`` expression that does not compile; the message names bundle, rule and position."""

    code = "policy_when_invalid"


@dataclass(frozen=True, slots=True)
class WhenResult:
    """One evaluation: ``value`` is the bool produced, or None with ``error`` set."""

    value: bool | None
    error: str = ""


def _is_request(node: Any) -> bool:
    """True for the bare identifier ``request`` (``member -> primary -> ident``)."""
    while isinstance(node, Expression) and node.data in ("member", "primary") and len(node.children) == 1:
        node = node.children[0]
    return isinstance(node, Expression) and node.data == "ident" and [str(c) for c in node.children] == ["request"]


def _unknown_request_field(tree: Expression[Any]) -> Any:
    """The first ``request.<name>`` whose name is not a request field, if any (a typo caught at load)."""
    for node in tree.iter_subtrees():
        if node.data == "member_dot" and len(node.children) == 2:
            target, name = node.children
            # a field name is a lark Token: a str that also knows its line and column
            if isinstance(name, str) and _is_request(target) and name not in REQUEST_FIELDS:
                return name
    return None


@dataclass(frozen=True, slots=True)
class WhenClause:
    """A compiled ``when`` expression. Equal when the source text is equal."""

    source: str
    _program: Any = field(compare=False, repr=False)

    @classmethod
    def compile(cls, source: str) -> WhenClause:
        """Compile ``source``; raise :class:`WhenExpressionError` with the position of the problem."""
        if len(source) > MAX_WHEN_CHARS:
            raise WhenExpressionError(f"expression is longer than {MAX_WHEN_CHARS} characters")
        with compiling() as env:
            try:
                ast = env.compile(source)
            except CELParseError as exc:
                raise WhenExpressionError(
                    f"expression {source!r} does not compile: syntax error at {position(exc.line, exc.column)}"
                ) from exc
            unknown = _unknown_request_field(ast)
            if unknown is not None:
                raise WhenExpressionError(
                    f"expression {source!r} reads unknown field request.{unknown} at "
                    f"{position(unknown.line, unknown.column)} (fields: {', '.join(sorted(REQUEST_FIELDS))})"
                )
            program = env.program(ast)
        return cls(source=source, _program=program)

    def evaluate(self, activation: dict[str, Any]) -> WhenResult:
        """Run against ``{"request": <CEL map>}`` (see :func:`activation_of`); never raises."""
        try:
            value = self._program.evaluate(activation)
        except CELEvalError as exc:
            return WhenResult(None, _eval_error(exc))
        except Exception as exc:  # cel-python bugs must fail closed too, not crash the kernel
            return WhenResult(None, f"{type(exc).__name__}: {exc}")
        if isinstance(value, CELEvalError):  # some errors come back as values
            return WhenResult(None, _eval_error(value))
        if not isinstance(value, BoolType):
            return WhenResult(None, f"must evaluate to a bool, got {type(value).__name__} {value!r}")
        return WhenResult(bool(value))


def _eval_error(exc: CELEvalError) -> str:
    args = exc.args
    message = str(args[0]) if args else "evaluation error"
    if len(args) >= 3 and args[2]:
        message += f" {', '.join(repr(str(a)) if isinstance(a, str) else repr(a) for a in args[2])}"
    return message


def activation_of(request: PolicyRequest) -> dict[str, Any]:
    """The CEL activation for ``request``; build it once per evaluation and reuse it for every rule."""
    return {"request": json_to_cel(request.as_cel())}
