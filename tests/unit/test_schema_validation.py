"""The pure schema helpers: meta-schema checks, violations with pointers, $ref through a resolver."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from coretex.errors import ConfigError, CoretexError
from coretex.model.schema import (
    InvalidSchemaIdError,
    SchemaInvalidError,
    SchemaRef,
    SchemaViolation,
    SchemaViolationError,
    UnresolvedRefError,
    canonical_json,
    check_schema,
    check_schema_id,
    digest,
    find_violations,
    parse_schema_ref,
    to_pointer,
    validate,
)

ORDER = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "qty": {"$ref": "#/$defs/count"}},
            },
        },
    },
    "$defs": {"count": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}

PERSON = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def resolver_of(schemas: Mapping[str, Mapping[str, Any]]) -> Any:
    """A resolver over a dict of URIs, recording what it was asked for."""
    asked: list[str] = []

    def resolve(uri: str) -> Mapping[str, Any]:
        asked.append(uri)
        if uri not in schemas:
            raise LookupError(uri)
        return schemas[uri]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def test_a_matching_document_has_no_violations() -> None:
    assert find_violations({"id": "o1", "items": [{"name": "a", "qty": 2}]}, ORDER) == []
    validate({"id": "o1", "items": []}, ORDER)


def test_violation_names_the_pointer_of_the_bad_field() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        validate({"id": "o1", "items": [{"name": 7}]}, ORDER)
    (violation,) = caught.value.violations
    assert violation == SchemaViolation(
        pointer="/items/0/name",
        message="7 is not of type 'string'",
        validator="type",
        schema_pointer="/properties/items/items/properties/name/type",
    )
    assert caught.value.code == "schema_violation"
    assert isinstance(caught.value, CoretexError)


def test_all_violations_are_reported_at_once_in_pointer_order() -> None:
    document = {
        "items": [{"name": "a", "qty": 0}] + [{"name": "b"}] * 9 + [{"qty": "x"}, {"name": 3}],
        "extra": True,
    }
    violations = find_violations(document, ORDER)
    assert [(v.pointer, v.validator) for v in violations] == [
        ("", "additionalProperties"),
        ("", "required"),
        ("/items/0/qty", "minimum"),
        ("/items/10", "required"),
        ("/items/10/qty", "type"),
        ("/items/11/name", "type"),
    ]
    assert "'id' is a required property" in violations[1].message


def test_violation_order_does_not_depend_on_key_order() -> None:
    document = {"items": [{"qty": 0, "name": 1}], "z": 1, "a": 2}
    flipped = {"a": 2, "z": 1, "items": [{"name": 1, "qty": 0}]}
    assert find_violations(document, ORDER) == find_violations(flipped, ORDER)
    assert len(find_violations(document, ORDER)) == 4


def test_error_message_lists_the_violations_with_their_pointers() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        validate({"id": "", "items": "no"}, ORDER, schema_label="coretex:schema:acme.order@3")
    text = str(caught.value)
    assert text.startswith("document does not match coretex:schema:acme.order@3 (2 violations): ")
    assert "/id: '' should be non-empty" in text
    assert "/items: 'no' is not of type 'array'" in text
    assert [v.as_dict()["pointer"] for v in caught.value.violations] == ["/id", "/items"]


def test_root_violation_reads_as_root_and_long_messages_are_cut() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        validate("x" * 1000, {"type": "integer"})
    (violation,) = caught.value.violations
    assert violation.pointer == ""
    assert len(violation.message) == 300 and violation.message.endswith("…")
    assert "(1 violation): <root>: " in str(caught.value)


def test_violations_beyond_the_cap_are_dropped_and_flagged() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        validate(list(range(12)), {"items": {"type": "string"}}, max_violations=5)
    assert [v.pointer for v in caught.value.violations] == ["/0", "/1", "/2", "/3", "/4"]
    assert caught.value.truncated
    assert "(5+ violations)" in str(caught.value)


def test_pointer_escapes_tilde_and_slash() -> None:
    assert to_pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"
    schema = {"properties": {"a/b": {"type": "integer"}}}
    assert [v.pointer for v in find_violations({"a/b": "x"}, schema)] == ["/a~1b"]


def test_ref_to_a_registered_schema_is_resolved_through_the_resolver() -> None:
    resolve = resolver_of({"coretex:schema:acme.person@2": PERSON})
    team = {"type": "array", "items": {"$ref": "coretex:schema:acme.person@2"}}
    assert check_schema(team, resolve) == frozenset({"coretex:schema:acme.person@2"})
    violations = find_violations([{"name": "a"}, {"name": 1}, {}], team, resolve)
    assert [(v.pointer, v.validator) for v in violations] == [("/1/name", "type"), ("/2", "required")]


def test_ref_with_fragment_into_a_resolved_schema() -> None:
    library = {"$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$"}}}
    resolve = resolver_of({"coretex:schema:acme.lib": library})
    schema = {"properties": {"tag": {"$ref": "coretex:schema:acme.lib#/$defs/tag"}}}
    assert [v.pointer for v in find_violations({"tag": "UP"}, schema, resolve)] == ["/tag"]
    with pytest.raises(UnresolvedRefError) as caught:
        check_schema({"$ref": "coretex:schema:acme.lib#/$defs/missing"}, resolve)
    assert caught.value.path == "/$ref"


def test_unknown_ref_is_refused_with_its_path() -> None:
    schema = {"properties": {"owner": {"$ref": "coretex:schema:acme.nobody"}}}
    with pytest.raises(UnresolvedRefError) as caught:
        check_schema(schema, resolver_of({}))
    assert caught.value.code == "schema_ref_unresolved"
    assert caught.value.ref == "coretex:schema:acme.nobody"
    assert caught.value.path == "/properties/owner/$ref"
    assert isinstance(caught.value, SchemaInvalidError) and isinstance(caught.value, ConfigError)
    with pytest.raises(UnresolvedRefError):
        check_schema(schema)  # no resolver: nothing external resolves


def test_broken_local_ref_is_refused() -> None:
    with pytest.raises(UnresolvedRefError, match="'#/\\$defs/nope' at /items/\\$ref"):
        check_schema({"items": {"$ref": "#/$defs/nope"}})


def test_ref_inside_data_keywords_is_not_a_reference() -> None:
    schema = {"const": {"$ref": "coretex:schema:acme.x"}, "examples": [{"$ref": "nowhere"}]}
    assert check_schema(schema, resolver_of({})) == frozenset()


def test_resolver_failure_other_than_lookup_propagates() -> None:
    class Outage(Exception):
        pass

    def broken(uri: str) -> Mapping[str, Any]:
        raise Outage(uri)

    schema = {"$ref": "coretex:schema:acme.person"}
    with pytest.raises(Outage):
        check_schema(schema, broken)
    with pytest.raises(Outage):
        validate({}, schema, broken, schema_checked=True)


def test_validation_with_a_ref_that_stopped_resolving_says_so() -> None:
    schema = {"$ref": "coretex:schema:acme.gone@1"}
    with pytest.raises(UnresolvedRefError, match="coretex:schema:acme.gone@1"):
        validate({}, schema, resolver_of({}), schema_checked=True)


def test_invalid_schema_names_the_path_and_every_problem() -> None:
    schema = {"properties": {"a": {"type": "strnig"}, "b": {"minimum": "ten"}}}
    with pytest.raises(SchemaInvalidError) as caught:
        check_schema(schema)
    assert caught.value.code == "schema_invalid"
    assert caught.value.path == "/properties/a/type"
    assert "invalid schema at /properties/a/type" in str(caught.value)
    assert [p.pointer for p in caught.value.problems] == ["/properties/a/type", "/properties/b/minimum"]


def test_bad_regex_and_inline_invalid_schema_are_refused() -> None:
    with pytest.raises(SchemaInvalidError, match="/properties/x/pattern"):
        check_schema({"properties": {"x": {"pattern": "(unclosed"}}})
    with pytest.raises(SchemaInvalidError):
        validate({}, {"type": 12})


def test_other_dialects_and_registry_ids_are_refused() -> None:
    with pytest.raises(SchemaInvalidError, match="only https://json-schema.org/draft/2020-12/schema") as caught:
        check_schema({"$schema": "http://json-schema.org/draft-07/schema#"})
    assert caught.value.path == "/$schema"
    check_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"})
    with pytest.raises(SchemaInvalidError, match="may not claim") as caught:
        check_schema({"$defs": {"x": {"$id": "coretex:schema:acme.fake"}}})
    assert caught.value.path == "/$defs/x/$id"


def test_refs_to_the_meta_schema_and_embedded_ids_resolve_without_the_resolver() -> None:
    resolve = resolver_of({})
    check_schema({"$ref": "https://json-schema.org/draft/2020-12/schema"}, resolve)
    embedded = {"$id": "https://acme.example/a.json", "$defs": {"b": {"$id": "b.json"}}, "$ref": "b.json"}
    assert check_schema(embedded, resolve) == frozenset()
    assert resolve.asked == []


def test_schema_ids_and_refs_parse_strictly() -> None:
    assert check_schema_id("acme.incident-context") == "acme.incident-context"
    for bad in ("", "Acme", ".x", "a:b", "a" * 129, "a b"):
        with pytest.raises(InvalidSchemaIdError):
            check_schema_id(bad)
    assert parse_schema_ref("coretex:schema:acme.x@12") == SchemaRef("acme.x", 12)
    assert parse_schema_ref("acme.x") == SchemaRef("acme.x", None)
    assert SchemaRef("acme.x", 3).uri == "coretex:schema:acme.x@3"
    for bad in ("coretex:schema:acme.x@0", "acme.x@01", "acme.x@", "coretex:schema:", "other:acme.x"):
        with pytest.raises(InvalidSchemaIdError):
            parse_schema_ref(bad)


def test_canonical_json_is_stable_and_refuses_non_json() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert digest(canonical_json({"a": 1, "b": 2})) == digest(canonical_json({"b": 2, "a": 1}))
    with pytest.raises(SchemaInvalidError):
        canonical_json({"x": float("nan")})
    with pytest.raises(SchemaInvalidError):
        canonical_json({"x": object()})
