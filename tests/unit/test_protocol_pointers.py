"""CAP pointer URIs (spec 4.5): formatting, parsing, the legacy form and every rejection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coretex.errors import PointerError
from coretex.protocol import (
    ArtifactPointer,
    ContextPointer,
    Pointer,
    ResultPointer,
    parse_artifact_pointer,
    parse_context_pointer,
    parse_pointer,
    parse_result_pointer,
)

POINTER_TYPES: list[type[Pointer]] = [ContextPointer, ResultPointer, ArtifactPointer]
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"


@pytest.mark.parametrize(
    ("pointer", "kind", "uri"),
    [
        (ContextPointer("job-1"), "ctx", "redis://ctx:job-1"),
        (ResultPointer("job-1"), "res", "redis://res:job-1"),
        (ArtifactPointer("log.2"), "art", "redis://art:log.2"),
    ],
)
def test_format(pointer: Pointer, kind: str, uri: str) -> None:
    assert pointer.kind == kind
    assert pointer.uri == uri
    assert str(pointer) == uri
    assert parse_pointer(uri) == pointer


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("redis://ctx:3f2a9c1e-7b4d-4e7e-9a65-0c1d2e3f4a5b", ContextPointer("3f2a9c1e-7b4d-4e7e-9a65-0c1d2e3f4a5b")),
        ("redis://res:job_1", ResultPointer("job_1")),
        ("redis://art:job-1:stdout.log", ArtifactPointer("job-1:stdout.log")),
        ("redis://ctx::", ContextPointer(":")),
    ],
)
def test_parse_reference_form(uri: str, expected: Pointer) -> None:
    assert parse_pointer(uri) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("redis://ctx/job-basic-001", ContextPointer("job-basic-001")),
        ("redis://res/job-basic-001", ResultPointer("job-basic-001")),
        ("redis://art/a:b", ArtifactPointer("a:b")),
    ],
)
def test_parse_legacy_form_and_format_reference_form(uri: str, expected: Pointer) -> None:
    pointer = parse_pointer(uri)
    assert pointer == expected
    assert pointer.uri == uri.replace(f"{pointer.kind}/", f"{pointer.kind}:", 1)


def test_pointers_of_different_kinds_are_not_equal() -> None:
    context: object = ContextPointer("j")
    assert context != ResultPointer("j")
    assert len({ContextPointer("j"), ResultPointer("j"), ArtifactPointer("j"), ContextPointer("j")}) == 3


def test_pointers_are_frozen() -> None:
    pointer = ContextPointer("j")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pointer.id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("parse", "uri", "expected"),
    [
        (parse_context_pointer, "redis://ctx:j", ContextPointer("j")),
        (parse_result_pointer, "redis://res/j", ResultPointer("j")),
        (parse_artifact_pointer, "redis://art:j", ArtifactPointer("j")),
    ],
)
def test_typed_parsers(parse: Callable[[str], Pointer], uri: str, expected: Pointer) -> None:
    assert parse(uri) == expected


@pytest.mark.parametrize(
    ("parse", "uri", "message"),
    [
        (parse_context_pointer, "redis://res:j", "expected a pointer of kind 'ctx', got 'redis://res:j'"),
        (parse_result_pointer, "redis://ctx:j", "expected a pointer of kind 'res', got 'redis://ctx:j'"),
        (parse_artifact_pointer, "redis://ctx/j", "expected a pointer of kind 'art', got 'redis://ctx:j'"),
    ],
)
def test_typed_parsers_reject_other_kinds(parse: Callable[[str], Pointer], uri: str, message: str) -> None:
    with pytest.raises(PointerError, match=message):
        parse(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "unknown pointer scheme"),
        ("ctx:job-1", "unknown pointer scheme"),
        ("s3://bucket/key", "unknown pointer scheme"),
        ("file:///var/cap/ctx/job-1", "unknown pointer scheme"),
        ("REDIS://ctx:job-1", "unknown pointer scheme"),
        (" redis://ctx:job-1", "unknown pointer scheme"),
        ("redis://", "malformed pointer"),
        ("redis://ctx", "malformed pointer"),
        ("redis://ctx:", "empty pointer id"),
        ("redis://ctx/", "empty pointer id"),
        ("redis://mem:x", "unknown pointer kind 'mem'"),
        ("redis://CTX:x", "unknown pointer kind 'CTX'"),
        ("redis://:x", "unknown pointer kind ''"),
        ("redis:///x", "unknown pointer kind ''"),
        ("redis://ctx:a/b", "contains '/'"),
        ("redis://ctx//job-1", "contains '/'"),
        ("redis://ctx:job 1", "contains ' '"),
        ("redis://ctx:job-1\n", "contains '\\\\n'"),
        ("redis://ctx:job-1?token=secret", "contains '\\?'"),
        ("redis://ctx:user@host", "contains '@'"),
        ("redis://ctx:caf\u00e9", "contains '\u00e9'"),
        ("redis://ctx:" + "a" * 201, "201 characters long; the limit is 200"),
    ],
)
def test_parse_rejects(uri: str, message: str) -> None:
    with pytest.raises(PointerError, match=message):
        parse_pointer(uri)


@pytest.mark.parametrize("value", [None, b"redis://ctx:j", 7], ids=["none", "bytes", "int"])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(PointerError, match="must be a string"):
        parse_pointer(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("pointer_type", POINTER_TYPES)
@pytest.mark.parametrize(
    ("pointer_id", "message"),
    [
        ("", "empty pointer id"),
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
        ("x" * 201, "limit is 200"),
    ],
)
def test_constructors_reject_bad_ids(pointer_type: type[Pointer], pointer_id: str, message: str) -> None:
    with pytest.raises(PointerError, match=message):
        pointer_type(pointer_id)


@pytest.mark.parametrize("pointer_type", POINTER_TYPES)
def test_constructors_reject_non_string_ids(pointer_type: type[Pointer]) -> None:
    with pytest.raises(PointerError, match="must be a string"):
        pointer_type(42)  # type: ignore[arg-type]


def test_longest_id_is_accepted() -> None:
    pointer_id = "a" * 200
    assert parse_pointer(f"redis://res:{pointer_id}") == ResultPointer(pointer_id)


@given(
    pointer_id=st.text(alphabet=ID_ALPHABET, min_size=1, max_size=200),
    pointer_type=st.sampled_from(POINTER_TYPES),
)
def test_any_valid_id_round_trips(pointer_id: str, pointer_type: type[Pointer]) -> None:
    pointer = pointer_type(pointer_id)
    assert pointer.id == pointer_id
    assert parse_pointer(pointer.uri) == pointer
    assert parse_pointer(f"redis://{pointer.kind}/{pointer_id}") == pointer


@given(pointer_id=st.text(min_size=1, max_size=50).filter(lambda s: any(c not in ID_ALPHABET for c in s)))
def test_any_id_with_a_foreign_character_is_rejected(pointer_id: str) -> None:
    with pytest.raises(PointerError):
        ContextPointer(pointer_id)
    with pytest.raises(PointerError):
        parse_pointer(f"redis://ctx:{pointer_id}")
