"""The pure half of the config service: RFC 7386 merge patch, merge order, section validation."""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from coretex.config import ConfigInvalidError, merge_layers, merge_patch, validate_config
from coretex.config.base_files import read_base_files
from coretex.config.documents import ConfigDocument, DocumentSet, check_address, check_document
from coretex.config.snapshot import canonical_json, sha256_hex
from coretex.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"

# RFC 7386 Appendix A, every example: (original, patch, result).
RFC7386_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386_APPENDIX_A)
def test_rfc7386_appendix_a(original: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(original, patch) == expected


def test_rfc7386_section_3_example() -> None:
    original = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(original, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_merge_patch_never_modifies_its_arguments() -> None:
    original = {"a": {"b": [1, 2], "c": {"d": 1}}, "x": 1}
    patch = {"a": {"c": {"d": None, "e": [3]}}, "x": None}
    original_before, patch_before = copy.deepcopy(original), copy.deepcopy(patch)
    result = merge_patch(original, patch)
    assert result == {"a": {"b": [1, 2], "c": {"e": [3]}}}
    assert original == original_before and patch == patch_before
    result["a"]["b"].append(99)
    result["a"]["c"]["e"].append(99)
    assert original == original_before and patch == patch_before, "the result shares objects with an input"


_json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["a", "b", ""])
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=3),
    max_leaves=12,
)


@hyp_settings(max_examples=80, deadline=None)
@given(target=_json, patch=_json)
def test_applying_a_patch_twice_changes_nothing_more(target: Any, patch: Any) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


def test_merge_layers_applies_in_order_later_wins() -> None:
    layers: list[dict[str, Any]] = [{"a": 1, "b": {"x": 1}}, {"a": 2, "b": {"y": 2}}, {"b": {"x": None}}]
    assert merge_layers(layers) == {"a": 2, "b": {"y": 2}}
    assert merge_layers(reversed(layers)) == {"a": 1, "b": {"x": 1, "y": 2}}


def _doc(scope: str, doc_id: str, doc: dict[str, Any]) -> ConfigDocument:
    return ConfigDocument(scope, doc_id, doc, "tester", "", 1.0)


def _topics(target: str) -> dict[str, Any]:
    return {"pools": {"topics": {"job.x": target}}}


def test_effective_merges_base_then_packs_in_install_order_then_tenant() -> None:
    docs = (
        DocumentSet()
        .with_document(_doc("system", "base", _topics("base")))
        .with_document(_doc("pack", "first", _topics("first")))
        .with_document(_doc("pack", "second", _topics("second")))
        .with_document(_doc("tenant", "t1", _topics("tenant")))
    )
    assert docs.effective()["pools"]["topics"]["job.x"] == "second"
    assert docs.effective("t1")["pools"]["topics"]["job.x"] == "tenant"
    assert docs.effective("t2") == docs.effective(), "a tenant without overrides sees the system config"
    # Updating a pack keeps its install position: it still loses to the pack installed after it.
    updated = docs.with_document(_doc("pack", "first", _topics("first-v2")))
    assert updated.pack_order == ["first", "second"]
    assert updated.effective()["pools"]["topics"]["job.x"] == "second"
    assert updated.without("pack", "second").effective()["pools"]["topics"]["job.x"] == "first-v2"


def test_tenant_null_deletes_a_key_only_in_its_own_view() -> None:
    docs = (
        DocumentSet()
        .with_document(_doc("system", "base", {"limits": {"max_concurrent_jobs": 5, "max_input_bytes": 10}}))
        .with_document(_doc("tenant", "t1", {"limits": {"max_input_bytes": None}}))
    )
    assert docs.effective("t1") == {"limits": {"max_concurrent_jobs": 5}}
    assert docs.effective() == {"limits": {"max_concurrent_jobs": 5, "max_input_bytes": 10}}


def test_from_documents_follows_the_recorded_pack_order_and_json_round_trips() -> None:
    stored = [_doc("pack", "b", _topics("b")), _doc("system", "base", {}), _doc("pack", "a", _topics("a"))]
    docs = DocumentSet.from_documents(stored, ["b", "a"])
    assert docs.pack_order == ["b", "a"]
    assert docs.effective()["pools"]["topics"]["job.x"] == "a"
    again = DocumentSet.from_json(docs.to_json())
    assert again.to_json() == docs.to_json()
    assert again.effective() == docs.effective()


def _pools(topics: dict[str, Any]) -> dict[str, Any]:
    return {"pools": {"echo": {"requires": []}, "gpu": {"requires": ["cuda"]}}, "topics": topics}


def test_valid_config_of_every_section_passes() -> None:
    validate_config(
        {
            "pools": _pools({"job.echo": "echo", "job.train.*": ["gpu", "echo"]}),
            "timeouts": {"topics": {"job.echo": {"timeout_seconds": 30, "max_retries": 0}}},
            "limits": {"max_concurrent_jobs": 10, "max_input_bytes": 1024},
            "retention": {"short": 3600, "standard": 86400, "audit": 31536000},
            "system": {"anything": ["goes", 1]},
        },
        "test",
    )


@pytest.mark.parametrize(
    ("config", "section", "path", "reason"),
    [
        ({"pools": _pools({"job.x": "nope"})}, "pools", "/topics/job.x", "unknown pool 'nope'"),
        ({"pools": _pools({"job.x": ["echo", "nope"]})}, "pools", "/topics/job.x/1", "unknown pool 'nope'"),
        ({"pools": {"pools": {}}}, "pools", "/", "'topics' is a required property"),
        ({"timeouts": {"topics": {"job.x": {"timeout_seconds": "30"}}}}, "timeouts", "/topics/job.x/timeout_seconds",
         "'30' is not of type 'integer'"),
        ({"timeouts": {"topics": {"job.x": {"timeout_seconds": 0}}}}, "timeouts", "/topics/job.x/timeout_seconds",
         "0 is less than the minimum of 1"),
        ({"timeouts": {"topics": {"job.x": {"max_retries": -1}}}}, "timeouts", "/topics/job.x/max_retries",
         "-1 is less than the minimum of 0"),
        ({"timeouts": {"topics": {"job.x": {"timeout_seconds": 1.0}}}}, "timeouts", "/topics/job.x/timeout_seconds",
         "1.0 is not of type 'integer'"),
        ({"timeouts": {"topics": {"job.x": {"retries": 1}}}}, "timeouts", "/topics/job.x", "'retries' was unexpected"),
        ({"timeouts": {"defaults": {}}}, "timeouts", "/", "'defaults' was unexpected"),
        ({"limits": {"max_concurrent_jobs": True}}, "limits", "/max_concurrent_jobs", "True is not of type 'integer'"),
        ({"retention": {"forever": 1}}, "retention", "/", "'forever' was unexpected"),
        ({"system": []}, "system", "/", "[] is not of type 'object'"),
        ({"budgets": {}}, "budgets", "/", "unknown section"),
    ],
)
def test_invalid_config_names_section_path_and_reason(config: dict[str, Any], section: str, path: str,
                                                      reason: str) -> None:
    with pytest.raises(ConfigInvalidError) as info:
        validate_config(config, "the test config")
    error = info.value
    assert (error.code, error.section, error.path) == ("config_invalid", section, path)
    assert reason in error.reason
    assert isinstance(error, ConfigError)
    assert str(error).startswith("the test config: ")


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (["pools"], "must be an object of sections"),
        ({"timeouts": {"topics": {"job.x": {"timeout_seconds": float("nan")}}}}, "not JSON data"),
        ({"system": {"when": datetime.date(2024, 1, 1)}}, "not JSON data"),
        ({"system": {"blob": "x" * 200}}, "larger than 100 bytes"),
        ({"pool": {}}, "unknown section"),
    ],
)
def test_check_document_refuses_bad_documents(doc: Any, reason: str) -> None:
    with pytest.raises(ConfigInvalidError, match=reason):
        check_document("pack", "acme", doc, max_bytes=100)


@pytest.mark.parametrize(
    ("scope", "doc_id"),
    [("global", "x"), ("system", "other"), ("system", "policy"), ("tenant", "a:b"), ("pack", ""), ("pack", "-x")],
)
def test_check_address_refuses_bad_scope_or_id(scope: str, doc_id: str) -> None:
    with pytest.raises(ConfigError):
        check_address(scope, doc_id)


def test_repo_base_files_are_a_valid_config() -> None:
    base = read_base_files(REPO_CONFIG)
    assert set(base) == {"pools", "timeouts", "limits", "retention", "system"}
    assert base["pools"]["topics"]["job.echo"] == "echo"
    validate_config(base, "config/")


def test_base_files_read_one_section_per_file_and_refuse_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "limits.yaml").write_text("max_concurrent_jobs: 4\n")
    (tmp_path / "system.yaml").write_text("# only a comment\n")
    (tmp_path / "README.md").write_text("not config")
    assert read_base_files(tmp_path) == {"limits": {"max_concurrent_jobs": 4}, "system": {}}
    (tmp_path / "timeout.yaml").write_text("topics: {}\n")
    with pytest.raises(ConfigInvalidError, match="unknown section file timeout.yaml"):
        read_base_files(tmp_path)


def test_base_files_refuse_bad_yaml_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_base_files(tmp_path / "missing")
    (tmp_path / "system.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="system.yaml"):
        read_base_files(tmp_path)


def test_canonical_json_is_key_order_independent() -> None:
    a = json.loads('{"b": 1, "a": {"y": [1, 2], "x": "é"}}')
    b = json.loads('{"a": {"x": "é", "y": [1, 2]}, "b": 1}')
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":"é","y":[1,2]},"b":1}'
    assert sha256_hex(canonical_json(a)) == sha256_hex(canonical_json(b))
