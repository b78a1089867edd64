"""The one error shape of the gateway: RFC 9457 ``application/problem+json``.

Every non-2xx answer, whatever raised it, has this body::

    {"type": "about:blank" | "urn:coretex:problem:<code>",
     "title": "<HTTP reason phrase>",
     "status": <HTTP status>,
     "detail": "<what went wrong, for a human>",
     "errors": {"<field.path>": ["<message>", ...]}}      # validation problems only

Three sources feed :func:`problem_response`:

- :class:`Problem`, raised on purpose by routes and auth;
- werkzeug's ``HTTPException`` (404/405/413 from routing and Flask, 400/422 from webargs);
- :class:`~coretex.errors.CoretexError` from core services, mapped by :func:`problem_from_coretex`.

``errors`` keys are dotted field paths for the request's own shape (``meta.tenant_id``) and
RFC 6901 pointers where a document was checked as a whole: a workflow document
(``/steps/1/topic``), a run's input against its JSON Schema (``/input/name``), a schema being
registered (``/properties/a/type``). ``_schema`` names the whole body.

Workflow-engine errors: an invalid workflow or a schema violation is 422 with every problem in
``errors``; a run start the kernel refuses is 403 (``run_denied``); an approval this approver may
not give (role, separation of duties, decided already) is 403 (``approval_refused``) with the
reason; the tenant's maximum of concurrent runs is 429 (``run_limit``).

Anything else is a 500 whose detail never carries the exception text (Flask logs it).
"""

from __future__ import annotations

import http
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import marshmallow as ma
from flask import Response, current_app, json
from werkzeug.exceptions import HTTPException

from coretex.engine.errors import ApprovalRefusedError as StepApprovalRefusedError
from coretex.engine.errors import RunRefusedError, StepNotWaitingError
from coretex.errors import (
    ConfigError,
    CoretexError,
    IllegalTransitionError,
    KernelUnavailableError,
    NotFoundError,
    RoutingError,
    StoreError,
)
from coretex.model.schema import (
    InvalidSchemaIdError,
    SchemaInvalidError,
    SchemaTooLargeError,
    SchemaViolationError,
)
from coretex.scheduler.approvals import ApprovalRefusedError, ApprovalStaleError
from coretex.scheduler.submit import InputTooLargeError
from coretex.store.approvals import ApprovalAlreadyDecidedError
from coretex.store.runs import RunLimitError
from coretex.store.schemas import SchemaInUseError, SchemaLimitError
from coretex.workflow.definition import WorkflowInvalidError

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
BLANK = "about:blank"
TYPE_PREFIX = "urn:coretex:problem:"
VALIDATION_TYPE = TYPE_PREFIX + "validation_error"
SCHEMA_ERRORS_KEY = "_schema"
_LOCATIONS = frozenset({"json", "query", "querystring", "form", "headers", "cookies", "files", "view_args", "path"})


class ProblemSchema(ma.Schema):
    """Documentation of the problem body (responses are built by :func:`problem_response`)."""

    type = ma.fields.String(required=True, metadata={"description": "about:blank or urn:coretex:problem:<code>"})
    title = ma.fields.String(required=True, metadata={"description": "HTTP reason phrase"})
    status = ma.fields.Integer(required=True, metadata={"description": "HTTP status code"})
    detail = ma.fields.String(required=True, metadata={"description": "What went wrong"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Validation problems only: dotted field path, or RFC 6901 pointer into a "
                                 "checked document (workflow, run input, schema), -> messages"},
    )


class Problem(Exception):
    """An HTTP problem raised on purpose; the error handler renders it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str = "",
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = TYPE_PREFIX + code if code else BLANK
        self.errors = dict(errors) if errors is not None else None
        self.headers = dict(headers or {})


def error_ref(status: int) -> str:
    """Name of the OpenAPI response component documenting ``status`` (flask-smorest's naming)."""
    return http.HTTPStatus(status).name


def problem_doc(description: str) -> dict[str, Any]:
    """``alt_response`` arguments documenting a problem answer with its own description
    (``response=error_ref(status)`` documents the status alone: a ``$ref`` cannot carry one)."""
    return {"schema": ProblemSchema, "content_type": PROBLEM_CONTENT_TYPE, "description": description}


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": http.HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    response = current_app.response_class(json.dumps(body), status=problem.status, mimetype=PROBLEM_CONTENT_TYPE)
    response.headers.update(problem.headers)
    return response


# ---- mapping ------------------------------------------------------------------------------
_CORETEX_STATUS: tuple[tuple[type[CoretexError], int], ...] = (
    (RunLimitError, 429),  # a StoreError, but the tenant's own doing: not an outage
    (SchemaLimitError, 409),
    (SchemaInUseError, 409),
    (NotFoundError, 404),
    (IllegalTransitionError, 409),
    (ApprovalAlreadyDecidedError, 409),
    (ApprovalStaleError, 409),
    (ApprovalRefusedError, 403),
    (StepApprovalRefusedError, 403),
    (StepNotWaitingError, 409),
    (RunRefusedError, 403),
    (InputTooLargeError, 413),
    (SchemaTooLargeError, 413),
    (InvalidSchemaIdError, 422),
    (SchemaInvalidError, 422),  # ConfigErrors about the request's schema, not our configuration
    (WorkflowInvalidError, 422),
    (SchemaViolationError, 422),
    (StoreError, 503),
    (KernelUnavailableError, 503),
    (RoutingError, 422),
    (ConfigError, 500),
)
_PUBLIC_DETAIL = {
    503: "a backing service is unavailable; retry later",
    500: "internal error; see the gateway log",
}


def problem_from_coretex(exc: CoretexError) -> Problem:
    """Map a core error to a problem; 5xx details are generic so no internals leak."""
    status = next((s for cls, s in _CORETEX_STATUS if isinstance(exc, cls)), 500)
    if status == 503:  # an outage: one line per request, not a traceback each
        log.warning("%s answered 503: %s", type(exc).__name__, exc)
    elif status >= 500:
        log.error("%s answered %d: %s", type(exc).__name__, status, exc, exc_info=exc)
    detail = _PUBLIC_DETAIL.get(status, str(exc))
    return Problem(status, detail, code=exc.code, errors=_document_errors(exc))


def _document_errors(exc: CoretexError) -> dict[str, list[str]] | None:
    """Every problem of a checked document, by RFC 6901 pointer (``_schema`` for the whole of it)."""
    if isinstance(exc, WorkflowInvalidError):
        return _by_pointer((p.path, p.message) for p in exc.problems)
    if isinstance(exc, SchemaViolationError):
        return violation_errors(exc)
    if isinstance(exc, SchemaInvalidError) and not isinstance(exc, SchemaTooLargeError):
        found = [(v.pointer, v.message) for v in exc.problems] or [(exc.path, str(exc))]
        return _by_pointer(found)
    return None


def violation_errors(exc: SchemaViolationError, prefix: str = "") -> dict[str, list[str]]:
    """``errors`` of a schema violation; ``prefix`` is where the checked document sits in the body."""
    return _by_pointer((prefix + v.pointer, v.message) for v in exc.violations)


def _by_pointer(problems: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pointer, message in problems:
        out.setdefault(pointer or SCHEMA_ERRORS_KEY, []).append(message)
    return out


def problem_from_http(exc: HTTPException) -> Problem:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("errors") or data.get("messages")
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    if status == 422 and messages:
        errors = flatten_errors(messages)
        fields = ", ".join(sorted(errors))
        return Problem(422, f"request validation failed: {fields}", code="validation_error", errors=errors,
                       headers=headers)
    if status == 400 and messages:
        return Problem(400, "request body is not valid JSON", code="bad_json", headers=headers)
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return Problem(413, f"request body exceeds {limit} bytes", headers=headers)
    if status >= 500:
        return Problem(status, _PUBLIC_DETAIL.get(status, "internal error"), headers=headers)
    return Problem(status, exc.description or http.HTTPStatus(status).phrase, headers=headers)


def flatten_errors(messages: Any) -> dict[str, list[str]]:
    """Turn webargs/marshmallow nested messages into ``{"meta.tenant_id": [...]}``.

    The outer request location (``json``) is dropped; ``_schema`` entries name their parent
    (``meta`` when meta is not an object) or stay ``_schema`` for the whole body.
    """
    if isinstance(messages, Mapping) and len(messages) == 1:
        (location, inner), = messages.items()
        if location in _LOCATIONS:
            messages = inner
    out: dict[str, list[str]] = {}
    _flatten_into(out, (), messages)
    return out


def _flatten_into(out: dict[str, list[str]], path: tuple[str, ...], value: Any) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            segment = () if key == SCHEMA_ERRORS_KEY else (str(key),)
            _flatten_into(out, path + segment, inner)
        return
    name = ".".join(path) or SCHEMA_ERRORS_KEY
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, Mapping | list | tuple):
            _flatten_into(out, path, item)
        else:
            out.setdefault(name, []).append(str(item))
