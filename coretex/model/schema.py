"""JSON Schema (Draft 2020-12) checks and instance validation. Pure: no I/O, no adapters.

Errors defined here (to be folded into :mod:`coretex.errors`)::

    ConfigError
    ├── InvalidSchemaIdError     an id or ``coretex:schema:`` reference that is malformed
    └── SchemaInvalidError       a schema that is not a valid Draft 2020-12 schema
        ├── SchemaTooLargeError  its canonical JSON is over the size limit
        └── UnresolvedRefError   a ``$ref`` that points nowhere
    CoretexError
    └── SchemaViolationError     an instance that does not match its schema

Schemas refer to registered schemas with ``{"$ref": "coretex:schema:<id>"}`` (the latest version,
looked up when used) or ``coretex:schema:<id>@<version>`` (pinned; prefer it for anything durable),
optionally with a fragment (``coretex:schema:acme.x@2#/$defs/item``). Any URI that is not in the
schema itself or one of the JSON Schema meta-schemas goes to a :data:`SchemaResolver` the caller
hands in; nothing is fetched from the network.

``format`` is an annotation, as the 2020-12 default: it is not asserted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema_specifications import REGISTRY as _META_SCHEMAS  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from coretex.errors import ConfigError, CoretexError
from coretex.model.canonical import canonical_json as _canonical_json

SCHEMA_REF_PREFIX = "coretex:schema:"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_MESSAGE_CHARS = 300
MAX_VIOLATIONS = 100
_ID_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
_ID_RE = re.compile(_ID_PATTERN)
_REF_RE = re.compile(rf"({_ID_PATTERN})(?:@([1-9][0-9]{{0,8}}))?")

SchemaResolver = Callable[[str], Mapping[str, Any] | bool]
"""Give the schema behind an external URI (fragment removed), or raise :class:`LookupError`.

Any other exception (a store outage, say) propagates unchanged out of the check or validation.
"""

# Keywords whose values are subschemas, as referencing's DRAFT202012 specification lists them.
_IN_VALUE = frozenset({
    "additionalProperties", "contains", "contentSchema", "else", "if", "items", "not",
    "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
})
_IN_ARRAY = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_IN_MAP = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"})
_REF_KEYWORDS = ("$ref", "$dynamicRef")


@dataclass(frozen=True)
class SchemaViolation:
    """One reason a document fails its schema (or a schema fails the meta-schema)."""

    pointer: str
    """RFC 6901 pointer into the document to the offending value ("" is the whole document)."""
    message: str
    """What is wrong, from jsonschema, cut to :data:`MAX_MESSAGE_CHARS`."""
    validator: str
    """The keyword that failed: ``type``, ``required``, ``minimum``, ..."""
    schema_pointer: str = ""
    """RFC 6901 pointer into the schema to the failing keyword (through ``$ref`` where followed)."""

    def as_dict(self) -> dict[str, str]:
        return {
            "pointer": self.pointer,
            "message": self.message,
            "validator": self.validator,
            "schema_pointer": self.schema_pointer,
        }

    def __str__(self) -> str:
        return f"{self.pointer or '<root>'}: {self.message}"


class InvalidSchemaIdError(ConfigError):
    code = "schema_id_invalid"


class SchemaInvalidError(ConfigError):
    """A schema we refuse; ``path`` is the RFC 6901 pointer inside the schema, ``problems`` all found."""

    code = "schema_invalid"

    def __init__(self, message: str, *, path: str = "", problems: Iterable[SchemaViolation] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.problems = tuple(problems)


class SchemaTooLargeError(SchemaInvalidError):
    code = "schema_too_large"


class UnresolvedRefError(SchemaInvalidError):
    """A ``$ref`` (or ``$dynamicRef``) that resolves to nothing; ``ref`` is its value."""

    code = "schema_ref_unresolved"

    def __init__(self, ref: str, *, path: str = "") -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"$ref {ref!r}{where} cannot be resolved", path=path)
        self.ref = ref


class SchemaViolationError(CoretexError):
    """An instance fails its schema; ``violations`` lists every failure, sorted by pointer."""

    code = "schema_violation"

    def __init__(
        self, violations: Iterable[SchemaViolation], *, schema_label: str = "", truncated: bool = False
    ) -> None:
        self.violations = tuple(violations)
        self.schema_label = schema_label
        self.truncated = truncated
        shown = "; ".join(str(v) for v in self.violations[:5])
        more = len(self.violations) - 5
        tail = f"; and {more} more" if more > 0 else ""
        target = f" {schema_label}" if schema_label else " its schema"
        plural = "" if len(self.violations) == 1 and not truncated else "s"
        count = f"{len(self.violations)}{'+' if truncated else ''} violation{plural}"
        super().__init__(f"document does not match{target} ({count}): {shown}{tail}")


@dataclass(frozen=True)
class SchemaRef:
    """A registered schema named by id, at one version or (``version=None``) the latest."""

    id: str
    version: int | None = None

    @property
    def uri(self) -> str:
        suffix = f"@{self.version}" if self.version is not None else ""
        return f"{SCHEMA_REF_PREFIX}{self.id}{suffix}"


def check_schema_id(schema_id: str) -> str:
    if not isinstance(schema_id, str) or not _ID_RE.fullmatch(schema_id):
        raise InvalidSchemaIdError(
            f"schema id must match {_ID_PATTERN} (lowercase, e.g. 'acme.incident-context'), got {schema_id!r}"
        )
    return schema_id


def parse_schema_ref(text: str) -> SchemaRef:
    """Parse ``coretex:schema:<id>[@<version>]`` or the bare ``<id>[@<version>]``."""
    body = text[len(SCHEMA_REF_PREFIX):] if isinstance(text, str) and text.startswith(SCHEMA_REF_PREFIX) else text
    match = _REF_RE.fullmatch(body) if isinstance(body, str) else None
    if match is None:
        raise InvalidSchemaIdError(f"expected '{SCHEMA_REF_PREFIX}<id>[@<version>]', got {text!r}")
    return SchemaRef(match.group(1), int(match.group(2)) if match.group(2) else None)


def canonical_json(value: Any) -> str:
    """The one spelling of a schema we hash, size and store: sorted keys, no spaces, no NaN."""
    try:
        return _canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise SchemaInvalidError(f"schema is not plain JSON: {exc}") from exc


def digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901: ``["items", 0, "a/b"]`` -> ``/items/0/a~1b``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def check_schema(schema: Mapping[str, Any] | bool, resolver: SchemaResolver | None = None) -> frozenset[str]:
    """Refuse ``schema`` unless it is valid Draft 2020-12 and every reference in it resolves.

    Returns the external URIs (fragment removed) the schema refers to directly, as handed to
    ``resolver``. Raises :class:`SchemaInvalidError` (``path`` = where in the schema) or
    :class:`UnresolvedRefError`.
    """
    _check_against_meta_schema(schema)
    retrieved: set[str] = set()
    failures: list[BaseException] = []
    resource = DRAFT202012.create_resource(schema)
    root = _registry(resolver, retrieved, failures).combine(_META_SCHEMAS).resolver_with_root(resource)
    for path, subschema, sub_resolver in _subschemas(schema, [], root):
        _check_keywords(subschema, path)
        for keyword in _REF_KEYWORDS:
            ref = subschema.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                sub_resolver.lookup(ref)
            except Unresolvable:
                if failures:
                    raise failures[0] from None
                raise UnresolvedRefError(ref, path=to_pointer([*path, keyword])) from None
    return frozenset(retrieved)


def find_violations(
    instance: Any,
    schema: Mapping[str, Any] | bool,
    resolver: SchemaResolver | None = None,
    *,
    schema_checked: bool = False,
) -> list[SchemaViolation]:
    """Every way ``instance`` fails ``schema``, sorted by pointer; ``[]`` when it matches.

    ``schema_checked=True`` skips :func:`check_schema` for schemas already checked (registered).
    """
    if not schema_checked:
        check_schema(schema, resolver)
    failures: list[BaseException] = []
    validator = Draft202012Validator(schema, registry=_registry(resolver, set(), failures))
    try:
        errors = list(validator.iter_errors(instance))
    except Unresolvable as exc:
        if failures:
            raise failures[0] from None
        raise UnresolvedRefError(str(getattr(exc, "ref", exc))) from None
    return _sorted_violations(errors)


def validate(
    instance: Any,
    schema: Mapping[str, Any] | bool,
    resolver: SchemaResolver | None = None,
    *,
    schema_checked: bool = False,
    schema_label: str = "",
    max_violations: int = MAX_VIOLATIONS,
) -> None:
    """Raise :class:`SchemaViolationError` with all violations (up to ``max_violations``) if any."""
    violations = find_violations(instance, schema, resolver, schema_checked=schema_checked)
    if violations:
        raise SchemaViolationError(
            violations[:max_violations], schema_label=schema_label, truncated=len(violations) > max_violations
        )


def _check_against_meta_schema(schema: Any) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as first:
        meta = Draft202012Validator(
            Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        problems = _sorted_violations(meta.iter_errors(schema)) or [_violation(first)]
        head = problems[0]  # the first by path, not whichever jsonschema met first: stable messages
        raise SchemaInvalidError(
            f"invalid schema at {head.pointer or '<root>'}: {head.message}",
            path=head.pointer,
            problems=problems[:MAX_VIOLATIONS],
        ) from None


def _check_keywords(subschema: Mapping[str, Any], path: list[str | int]) -> None:
    """What the meta-schema allows but we do not: another dialect, or an ``$id`` in our URI space."""
    dialect = subschema.get("$schema")
    if dialect is not None and dialect.rstrip("#") != DIALECT:
        where = to_pointer([*path, "$schema"])
        raise SchemaInvalidError(f"invalid schema at {where}: only {DIALECT} is supported, got {dialect!r}", path=where)
    schema_id = subschema.get("$id")
    if isinstance(schema_id, str) and schema_id.startswith(SCHEMA_REF_PREFIX):
        where = to_pointer([*path, "$id"])
        raise SchemaInvalidError(
            f"invalid schema at {where}: $id may not claim the registry's {SCHEMA_REF_PREFIX} URIs", path=where
        )


def _subschemas(
    schema: Any, path: list[str | int], resolver: Any
) -> Iterator[tuple[list[str | int], Mapping[str, Any], Any]]:
    """Walk every subschema (not ``const``/``enum``/``default`` data) with its path and resolver.

    ``resolver`` already has this schema's base URI; each child gets its own (an ``$id`` moves it).
    """
    if not isinstance(schema, Mapping):
        return
    yield path, schema, resolver
    for keyword, value in schema.items():
        if keyword in _IN_VALUE:
            children: list[tuple[str | int, Any]] = [(keyword, value)]
            prefix: list[str | int] = [*path]
        elif keyword in _IN_ARRAY and isinstance(value, list):
            children, prefix = list(enumerate(value)), [*path, keyword]
        elif keyword in _IN_MAP and isinstance(value, Mapping):
            children, prefix = list(value.items()), [*path, keyword]
        else:
            continue
        for step, child in children:
            if isinstance(child, Mapping):
                child_resolver = resolver.in_subresource(DRAFT202012.create_resource(child))
                yield from _subschemas(child, [*prefix, step], child_resolver)


def _registry(resolver: SchemaResolver | None, retrieved: set[str], failures: list[BaseException]) -> Registry[Any]:
    """A registry that asks ``resolver`` for unknown URIs; non-lookup failures are kept to re-raise."""

    def retrieve(uri: str) -> Resource[Any]:
        if resolver is None:
            raise NoSuchResource(uri)
        try:
            contents = resolver(uri)
        except LookupError:
            raise NoSuchResource(uri) from None
        except Exception as exc:
            failures.append(exc)
            raise
        retrieved.add(uri)
        return DRAFT202012.create_resource(contents)

    return Registry(retrieve=retrieve)  # type: ignore[call-arg]


def _violation(error: ValidationError | SchemaError) -> SchemaViolation:
    return SchemaViolation(
        pointer=to_pointer(error.absolute_path),
        message=_short(error.message),
        validator=str(error.validator),
        schema_pointer=to_pointer(error.absolute_schema_path),
    )


def _sorted_violations(errors: Iterable[ValidationError]) -> list[SchemaViolation]:
    keyed = {(_path_key(e.absolute_path), _violation(e)) for e in errors}
    return [v for _, v in sorted(keyed, key=lambda kv: (kv[0], kv[1].validator, kv[1].schema_pointer, kv[1].message))]


def _path_key(parts: Iterable[str | int]) -> tuple[tuple[int, int, str], ...]:
    """Sort array indexes numerically (``/2`` before ``/10``) and keys by text."""
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in parts)


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
