"""The sections of the effective config and their JSON schemas (Draft 2020-12).

The effective config is one object whose top-level keys are sections; each base file in
``config/`` is one section (``pools.yaml`` -> ``pools``). A document naming any other section is
refused, and so is a merged config that fails a section's schema or a cross-reference check
(a topic routed to a pool that does not exist). Integers are strict: ``1.0`` and ``true`` are
not integers here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from coretex.config.errors import ConfigInvalidError
from coretex.scheduler.routing import POOLS_SCHEMA

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_POSITIVE_INT = {"type": "integer", "minimum": 1}
_NON_NEGATIVE_INT = {"type": "integer", "minimum": 0}

_BUDGET = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"timeout_seconds": _POSITIVE_INT, "max_retries": _NON_NEGATIVE_INT},
}

TIMEOUTS_SCHEMA: dict[str, Any] = {
    "$schema": _DRAFT,
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "default": _BUDGET,
        "topics": {
            "type": "object",
            "propertyNames": {"minLength": 1},
            "additionalProperties": _BUDGET,
        },
    },
}
"""Job deadline and retry budget: ``default`` plus per-topic entries (keys may be globs as in
``pools.topics``; exact beats glob, longer glob beats shorter)."""

LIMITS_SCHEMA: dict[str, Any] = {
    "$schema": _DRAFT,
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_concurrent_jobs": _POSITIVE_INT,
        "max_concurrent_jobs_per_actor": _POSITIVE_INT,
        "max_input_bytes": _POSITIVE_INT,
        "max_concurrent_runs": _POSITIVE_INT,
    },
}
"""Admission limits; a tenant override of this section gives that tenant its own limits."""

RETENTION_SCHEMA: dict[str, Any] = {
    "$schema": _DRAFT,
    "type": "object",
    "additionalProperties": False,
    "properties": {"short": _POSITIVE_INT, "standard": _POSITIVE_INT, "audit": _POSITIVE_INT},
}
"""TTL in seconds of each artifact retention class."""

SYSTEM_SCHEMA: dict[str, Any] = {"$schema": _DRAFT, "type": "object"}
"""Free-form system knobs until a consumer defines them."""

SECTION_SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    "pools": POOLS_SCHEMA,
    "timeouts": TIMEOUTS_SCHEMA,
    "limits": LIMITS_SCHEMA,
    "retention": RETENTION_SCHEMA,
    "system": SYSTEM_SCHEMA,
}
SECTIONS = tuple(SECTION_SCHEMAS)


def _strict_integer(_checker: Any, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # untyped in types-jsonschema
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)
_VALIDATORS = {name: _Validator(schema) for name, schema in SECTION_SCHEMAS.items()}


def json_pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 pointer of a path; ``/`` for the section root."""
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "/" + "/".join(escaped)


def check_section_names(doc: Mapping[str, Any], context: str) -> None:
    """Refuse a document or config naming a section we do not know."""
    for name in sorted(doc):
        if name not in SECTION_SCHEMAS:
            raise ConfigInvalidError(name, "/", f"unknown section (known: {', '.join(SECTIONS)})", context)


def validate_config(config: Mapping[str, Any], context: str) -> None:
    """Raise :class:`ConfigInvalidError` for the first problem of a merged config, section by section."""
    check_section_names(config, context)
    for name in sorted(config):
        error = best_match(_VALIDATORS[name].iter_errors(config[name]))
        if error is not None:
            raise ConfigInvalidError(name, json_pointer(error.absolute_path), error.message, context)
        for check in _CROSS_CHECKS.get(name, ()):
            check(config[name], context)


def _check_pool_references(section: Mapping[str, Any], context: str) -> None:
    pools = section["pools"]
    for topic, target in sorted(section["topics"].items()):
        names = [target] if isinstance(target, str) else list(target)
        for index, pool in enumerate(names):
            if pool not in pools:
                path = ["topics", topic] if isinstance(target, str) else ["topics", topic, index]
                raise ConfigInvalidError("pools", json_pointer(path), f"unknown pool {pool!r}", context)


_CROSS_CHECKS: Mapping[str, tuple[Callable[[Any, str], None], ...]] = {"pools": (_check_pool_references,)}
