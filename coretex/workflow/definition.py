"""Workflow definitions: the document a pack ships, parsed and checked as a whole.

A workflow document (YAML or JSON)::

    id: deploy-service            # [a-z0-9][a-z0-9._-]*
    name: Deploy a service
    input_schema: {...} | "acme.deploy-input@1"     # inline JSON Schema or a registry id
    timeout_sec: 3600             # the whole run
    output: {url: "${steps.deploy.output.url}"}
    steps:                        # a list of steps with ids, or a map id -> step
      - id: build
        type: worker              # worker | approval | delay | condition | notify
        topic: job.build
        input: {ref: "${input.ref}"}
        retry: {max_attempts: 3, initial_backoff_sec: 1, max_backoff_sec: 30, multiplier: 2,
                jitter: 0.2, retry_on: [flaky]}
        ...

:func:`parse_workflow` reports every problem at once (:class:`WorkflowInvalidError`): the shape
(unknown keys, wrong types) from a JSON Schema, then the meaning: dangling or cyclic
``depends_on`` (the cycle is named), expressions that do not compile, unknown schema ids,
worker steps without a topic, duplicate ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

from coretex.errors import CoretexError
from coretex.model.schema import check_schema, parse_schema_ref, to_pointer
from coretex.workflow.expressions import ExpressionError, compile_expression, template_sources

STEP_TYPES = ("worker", "approval", "delay", "condition", "notify")
ON_FAILURE = ("fail_run", "continue")
ON_EXPIRY = ("reject", "skip")
ALERT_LEVELS = ("INFO", "WARNING", "CRITICAL")
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
"""Step ids are CEL identifiers, so ``steps.<id>.output`` reads naturally in expressions."""
MAX_STEPS = 500


class WorkflowInvalidError(CoretexError):
    """A workflow document with problems; ``problems`` lists every one (path, message)."""

    code = "workflow_invalid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.path or '<root>'}: {p.message}" for p in self.problems))


@dataclass(frozen=True)
class Problem:
    path: str
    """RFC 6901 pointer into the document."""
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_backoff_sec: float = 1.0
    max_backoff_sec: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.0
    """Fraction (0-1) of the backoff added at random (deterministically, from the attempt's id)."""
    retry_on: tuple[str, ...] = ()
    """Error codes worth another attempt; empty: any failure or timeout."""


@dataclass(frozen=True)
class StepMeta:
    """Maps to CAP ``JobMetadata`` of the step's jobs."""

    actor_id: str = ""
    actor_type: str = ""
    idempotency_key: str = ""
    pack_id: str = ""
    capability: str = ""
    risk_tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    id: str
    type: str
    depends_on: tuple[str, ...] = ()
    topic: str = ""
    input: Any = None
    input_schema: Any = None
    output_schema: Any = None
    retry: RetryPolicy = RetryPolicy()
    timeout_sec: float = 0
    condition: str = ""
    meta: StepMeta = StepMeta()
    on_failure: str = "fail_run"
    for_each: str = ""
    max_parallel: int = 0
    """0: every item at once."""
    approvers: tuple[str, ...] = ()
    quorum: int = 1
    allow_self_approval: bool = False
    expires_after_sec: float = 0
    on_expiry: str = "reject"
    delay_sec: float = 0
    delay_until: str = ""
    expression: str = ""
    level: str = "INFO"
    message: str = ""
    code: str = ""


@dataclass(frozen=True)
class Workflow:
    id: str
    steps: Mapping[str, Step]
    """In document order; :attr:`order` is a topological order."""
    order: tuple[str, ...]
    tenant: str = "default"
    name: str = ""
    description: str = ""
    version: int = 0
    input_schema: Any = None
    timeout_sec: float = 0
    output: Any = None
    labels: Mapping[str, str] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The document it was parsed from (what the store keeps)."""

    def dependants(self, step_id: str) -> list[str]:
        return [s.id for s in self.steps.values() if step_id in s.depends_on]

    def downstream(self, step_id: str) -> set[str]:
        """``step_id`` and every step that depends on it, directly or not."""
        found, todo = {step_id}, [step_id]
        while todo:
            for dependant in self.dependants(todo.pop()):
                if dependant not in found:
                    found.add(dependant)
                    todo.append(dependant)
        return found

    def schema_ids(self) -> set[str]:
        """Registry ids named by the workflow's and its steps' schemas."""
        named = [self.input_schema] + [s for step in self.steps.values() for s in (step.input_schema,
                                                                                  step.output_schema)]
        return {s for s in named if isinstance(s, str)}


_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SCHEMA_REF = {"type": ["object", "boolean", "string"]}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": STEP_ID_PATTERN},
        "type": {"enum": list(STEP_TYPES)},
        "depends_on": _STRINGS,
        "topic": {"type": "string", "minLength": 1},
        "input": {},
        "input_schema": _SCHEMA_REF,
        "output_schema": _SCHEMA_REF,
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "initial_backoff_sec": {"type": "number", "minimum": 0},
                "max_backoff_sec": {"type": "number", "minimum": 0},
                "multiplier": {"type": "number", "minimum": 1},
                "jitter": {"type": "number", "minimum": 0, "maximum": 1},
                "retry_on": _STRINGS,
            },
        },
        "timeout_sec": _POSITIVE,
        "condition": {"type": "string"},
        "meta": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "actor_id": {"type": "string"},
                "actor_type": {"enum": ["human", "service"]},
                "idempotency_key": {"type": "string"},
                "pack_id": {"type": "string"},
                "capability": {"type": "string"},
                "risk_tags": _STRINGS,
                "requires": _STRINGS,
                "labels": _LABELS,
            },
        },
        "on_failure": {"enum": list(ON_FAILURE)},
        "for_each": {"type": "string", "minLength": 1},
        "max_parallel": {"type": "integer", "minimum": 0},
        "approvers": _STRINGS,
        "quorum": {"type": "integer", "minimum": 1, "maximum": 20},
        "allow_self_approval": {"type": "boolean"},
        "expires_after_sec": _POSITIVE,
        "on_expiry": {"enum": list(ON_EXPIRY)},
        "delay_sec": {"type": "number", "minimum": 0},
        "delay_until": {"type": "string", "minLength": 1},
        "expression": {"type": "string"},
        "level": {"enum": list(ALERT_LEVELS)},
        "message": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["type"],
}
DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "tenant": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "version": {"type": "integer"},
        "input_schema": _SCHEMA_REF,
        "timeout_sec": _POSITIVE,
        "output": {},
        "labels": _LABELS,
        "steps": {  # each step is checked on its own (_STEP_SCHEMA), so every step's problems are reported
            "type": ["array", "object"], "minItems": 1, "maxItems": MAX_STEPS,
            "minProperties": 1, "maxProperties": MAX_STEPS,
        },
    },
    "required": ["id", "steps"],
}
_VALIDATOR = Draft202012Validator(DOCUMENT_SCHEMA)
_LIST_STEP_VALIDATOR = Draft202012Validator({**_STEP_SCHEMA, "required": ["id", "type"]})
_MAP_STEP_VALIDATOR = Draft202012Validator(_STEP_SCHEMA)

SchemaExists = Callable[[str], bool]


def parse_workflow(document: Any, *, schema_exists: SchemaExists | None = None) -> Workflow:
    """Parse and check ``document``; raise :class:`WorkflowInvalidError` listing every problem.

    ``schema_exists`` answers whether a registry schema id (``acme.x`` or ``acme.x@2``) exists;
    without it, ids are only checked for shape. A step whose shape is wrong is reported and left
    out of the checks of meaning, which still run for every other step.
    """
    problems = [Problem(to_pointer(e.absolute_path), e.message) for e in _VALIDATOR.iter_errors(document)]
    if problems:
        raise WorkflowInvalidError(sorted(problems, key=lambda p: p.path))
    raw_entries = _step_entries(document["steps"])
    step_validator = _LIST_STEP_VALIDATOR if isinstance(document["steps"], list) else _MAP_STEP_VALIDATOR
    entries: list[Entry] = []
    for step_id, raw, path in raw_entries:
        shape = [Problem(path + to_pointer(e.absolute_path), e.message) for e in step_validator.iter_errors(raw)]
        problems += sorted(shape, key=lambda p: p.path)
        if not shape:
            entries.append((_step(step_id, raw), raw, path))
    problems += _duplicate_ids(entries)
    steps: dict[str, Step] = {}
    for step, _, _ in entries:
        steps.setdefault(step.id, step)
    problems += _step_problems(entries, {step_id for step_id, _, _ in raw_entries})
    problems += _expression_problems(document, entries)
    problems += _schema_problems(document, entries, schema_exists)
    order, cycle = _topological_order(steps)
    if cycle:
        problems.append(Problem("/steps", f"depends_on forms a cycle: {' -> '.join(cycle)}"))
    if problems:
        raise WorkflowInvalidError(problems)
    return Workflow(
        id=document["id"],
        steps=steps,
        order=tuple(order),
        tenant=document.get("tenant", "default"),
        name=document.get("name", ""),
        description=document.get("description", ""),
        version=document.get("version", 0),
        input_schema=document.get("input_schema"),
        timeout_sec=document.get("timeout_sec", 0),
        output=document.get("output"),
        labels=dict(document.get("labels", {})),
        document=document,
    )


def _step_entries(raw_steps: Any) -> list[tuple[str, Mapping[str, Any], str]]:
    """(id, document text, path) of each step, whichever form (list or map) the document used."""
    if isinstance(raw_steps, list):
        return [(raw["id"] if isinstance(raw, Mapping) and isinstance(raw.get("id"), str) else f"<step {i}>", raw,
                 f"/steps/{i}") for i, raw in enumerate(raw_steps)]
    return [(step_id, raw, to_pointer(["steps", step_id])) for step_id, raw in raw_steps.items()]


Entry = tuple[Step, Mapping[str, Any], str]
"""A step as parsed, the document's text of it, and its path in the document."""


def _duplicate_ids(entries: Sequence[Entry]) -> list[Problem]:
    seen: dict[str, str] = {}
    problems = []
    for step, raw, path in entries:
        step_id = step.id
        if step_id in seen:
            problems.append(Problem(f"{path}/id", f"duplicate step id {step_id!r} (first at {seen[step_id]})"))
        seen.setdefault(step_id, path)
        if isinstance(raw, Mapping) and "id" in raw and raw["id"] != step_id:
            problems.append(Problem(f"{path}/id", f"id {raw['id']!r} differs from its key {step_id!r}"))
    problems += [Problem(path, f"step id {step.id!r} must match {STEP_ID_PATTERN}")
                 for step, _, path in entries if not re.fullmatch(STEP_ID_PATTERN, step.id)]
    return problems


def _step(step_id: str, raw: Mapping[str, Any]) -> Step:
    retry = raw.get("retry", {})
    meta = raw.get("meta", {})
    return Step(
        id=step_id,
        type=raw["type"],
        depends_on=tuple(raw.get("depends_on", ())),
        topic=raw.get("topic", ""),
        input=raw.get("input"),
        input_schema=raw.get("input_schema"),
        output_schema=raw.get("output_schema"),
        retry=RetryPolicy(
            max_attempts=retry.get("max_attempts", 1),
            initial_backoff_sec=retry.get("initial_backoff_sec", 1.0),
            max_backoff_sec=retry.get("max_backoff_sec", 60.0),
            multiplier=retry.get("multiplier", 2.0),
            jitter=retry.get("jitter", 0.0),
            retry_on=tuple(retry.get("retry_on", ())),
        ),
        timeout_sec=raw.get("timeout_sec", 0),
        condition=strip_template(raw.get("condition", "")),
        meta=StepMeta(
            actor_id=meta.get("actor_id", ""),
            actor_type=meta.get("actor_type", ""),
            idempotency_key=meta.get("idempotency_key", ""),
            pack_id=meta.get("pack_id", ""),
            capability=meta.get("capability", ""),
            risk_tags=tuple(meta.get("risk_tags", ())),
            requires=tuple(meta.get("requires", ())),
            labels=dict(meta.get("labels", {})),
        ),
        on_failure=raw.get("on_failure", "fail_run"),
        for_each=strip_template(raw.get("for_each", "")),
        max_parallel=raw.get("max_parallel", 0),
        approvers=tuple(raw.get("approvers", ())),
        quorum=raw.get("quorum", 1),
        allow_self_approval=raw.get("allow_self_approval", False),
        expires_after_sec=raw.get("expires_after_sec", 0),
        on_expiry=raw.get("on_expiry", "reject"),
        delay_sec=raw.get("delay_sec", 0),
        delay_until=raw.get("delay_until", ""),
        expression=strip_template(raw.get("expression", "")),
        level=raw.get("level", "INFO"),
        message=raw.get("message", ""),
        code=raw.get("code", ""),
    )


def strip_template(text: str) -> str:
    """``"${expr}"`` -> ``"expr"``: conditions may be written either way."""
    text = text.strip()
    return text[2:-1].strip() if text.startswith("${") and text.endswith("}") else text


_FIELDS_BY_TYPE = {
    "worker": {"topic", "input", "input_schema", "output_schema", "retry", "meta", "for_each", "max_parallel"},
    "approval": {"approvers", "quorum", "allow_self_approval", "expires_after_sec", "on_expiry"},
    "delay": {"delay_sec", "delay_until"},
    "condition": {"expression"},
    "notify": {"level", "message", "code"},
}
_TYPED_FIELDS = set().union(*_FIELDS_BY_TYPE.values())


def _step_problems(entries: Sequence[Entry], known: set[str]) -> list[Problem]:
    """Problems of meaning within each step; ``known`` are the ids of every step, well-shaped or not."""
    problems = []
    for step, _, path in entries:
        for dep in step.depends_on:
            if dep not in known:
                problems.append(Problem(f"{path}/depends_on", f"depends on unknown step {dep!r}"))
            elif dep == step.id:
                problems.append(Problem(f"{path}/depends_on", "a step cannot depend on itself"))
        if step.type == "worker" and not step.topic:
            problems.append(Problem(f"{path}/topic", "a worker step needs a topic"))
        if step.type == "condition" and not step.expression:
            problems.append(Problem(f"{path}/expression", "a condition step needs an expression"))
        if step.type == "approval" and not step.approvers:
            problems.append(Problem(f"{path}/approvers", "an approval step needs approver roles"))
        if step.type == "delay":
            problems += _delay_problems(step, path)
        if step.type == "notify" and not step.message:
            problems.append(Problem(f"{path}/message", "a notify step needs a message"))
    return problems


def _delay_problems(step: Step, path: str) -> list[Problem]:
    if bool(step.delay_sec) == bool(step.delay_until):
        return [Problem(path, "a delay step needs exactly one of delay_sec and delay_until")]
    if step.delay_until and not template_sources(step.delay_until) and parse_instant(step.delay_until) is None:
        return [Problem(f"{path}/delay_until", f"{step.delay_until!r} is not an ISO 8601 time with a zone")]
    return []


def fields_for_other_types(raw: Mapping[str, Any], step_type: str) -> list[str]:
    """Keys of ``raw`` that belong to another step type (given to a step that ignores them)."""
    return sorted(k for k in raw if k in _TYPED_FIELDS and k not in _FIELDS_BY_TYPE[step_type])


def parse_instant(text: str) -> float | None:
    """Seconds since the epoch for an ISO 8601 time with a zone (``Z`` or ``+02:00``), else None."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _expression_problems(document: Mapping[str, Any], entries: Sequence[Entry]) -> list[Problem]:
    checks: list[tuple[str, str]] = []
    for step, raw, path in entries:
        checks += [(f"{path}/input", s) for s in template_sources(step.input)]
        checks += [(f"{path}/message", s) for s in template_sources(step.message)]
        checks += [(f"{path}/delay_until", s) for s in template_sources(step.delay_until)]
        checks += [(f"{path}/{name}", text) for name, text in (("condition", step.condition),
                                                               ("for_each", step.for_each),
                                                               ("expression", step.expression)) if text]
        for key in fields_for_other_types(raw, step.type):
            checks.append((f"{path}/{key}", ""))  # reported below
    checks += [("/output", s) for s in template_sources(document.get("output"))]
    problems = []
    for path, source in checks:
        if not source:
            problems.append(Problem(path, "this key does not apply to the step's type"))
            continue
        try:
            compile_expression(source)
        except ExpressionError as exc:
            problems.append(Problem(path, str(exc)))
    return problems


def _schema_problems(document: Mapping[str, Any], entries: Sequence[Entry],
                     schema_exists: SchemaExists | None) -> list[Problem]:
    named = [("/input_schema", document.get("input_schema"))]
    for step, _, path in entries:
        named += [(f"{path}/input_schema", step.input_schema), (f"{path}/output_schema", step.output_schema)]
    problems = []
    for path, schema in named:
        if schema is None:
            continue
        try:
            if isinstance(schema, str):
                parse_schema_ref(schema)
                if schema_exists is not None and not schema_exists(schema):
                    problems.append(Problem(path, f"unknown schema id {schema!r}"))
            else:
                check_schema(schema)  # inline schemas are self-contained; shared ones live in the registry
        except CoretexError as exc:
            problems.append(Problem(path, str(exc)))
    return problems


def _topological_order(steps: Mapping[str, Step]) -> tuple[list[str], list[str]]:
    """(order, []) for a DAG, or (partial order, the steps of one cycle) when there is a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(step_id: str) -> list[str]:
        if state.get(step_id) == 2:
            return []
        if state.get(step_id) == 1:
            return [*stack[stack.index(step_id):], step_id]
        state[step_id] = 1
        stack.append(step_id)
        for dep in steps[step_id].depends_on:
            if dep in steps and dep != step_id and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[step_id] = 2
        order.append(step_id)
        return []

    for step_id in steps:
        if cycle := visit(step_id):
            return order, list(reversed(cycle))
    return order, []
