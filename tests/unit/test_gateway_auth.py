"""API key files and the constant-time key ring, without a server."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from coretex.errors import ConfigError
from coretex.gateway.auth import KeyRing, Principal, hash_key, new_api_key, write_key_file
from coretex.gateway.problems import flatten_errors


def test_new_keys_are_long_and_distinct() -> None:
    keys = {new_api_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(k) >= 40 for k in keys)


def test_the_key_file_holds_hashes_only(tmp_path: Path) -> None:
    key = new_api_key()
    path = tmp_path / "state" / "keys.yaml"
    write_key_file(path, [{"name": "dev", "key": key, "tenant": "default", "role": "admin"}])

    text = path.read_text()
    assert key not in text and hashlib.sha256(key.encode()).hexdigest() in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = KeyRing.from_file(path)
    assert ring.match(key) == Principal("dev", "default", "admin")
    assert ring.match(key + "x") is None and ring.match("") is None


def test_entries_may_be_given_prehashed(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    write_key_file(path, [{"name": "ci", "sha256": hash_key("k1"), "tenant": "t", "role": "viewer"}])
    assert KeyRing.from_file(path).match("k1") == Principal("ci", "t", "viewer")


def test_no_file_means_no_keys(tmp_path: Path) -> None:
    assert len(KeyRing.from_file(tmp_path / "absent.yaml")) == 0
    assert len(KeyRing.from_file(None)) == 0
    assert len(KeyRing.from_config({"keys": None})) == 0


@pytest.mark.parametrize(("doc", "match"), [
    ({"keys": [{"name": "a", "sha256": hash_key("k"), "tenant": "t", "role": "root"}]}, "role"),
    ({"keys": [{"name": "a", "sha256": hash_key("k"), "tenant": "a:b", "role": "admin"}]}, "tenant"),
    ({"keys": [{"name": "a", "key": "plaintext", "tenant": "t", "role": "admin"}]}, "keys/0"),
    ({"keys": [{"name": "a", "sha256": hash_key("k"), "tenant": "t", "role": "admin"},
               {"name": "a", "sha256": hash_key("j"), "tenant": "t", "role": "admin"}]}, "duplicate key name"),
    ({"keys": [{"name": "a", "sha256": hash_key("k"), "tenant": "t", "role": "admin"},
               {"name": "b", "sha256": hash_key("k"), "tenant": "u", "role": "viewer"}]}, "duplicate key sha256"),
    ({"users": []}, "users"),
])
def test_bad_key_files_are_config_errors(doc: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        KeyRing.from_config(doc)


def test_writing_an_entry_without_key_or_hash_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs 'key' or 'sha256'"):
        write_key_file(tmp_path / "k.yaml", [{"name": "a", "tenant": "t", "role": "admin"}])
    assert not (tmp_path / "k.yaml").exists()


def test_validation_messages_flatten_to_dotted_paths() -> None:
    messages = {"json": {
        "topic": ["Missing data for required field."],
        "meta": {"tenant_id": ["Not a valid string."], "risk_tags": {1: ["Not a valid string."]},
                 "labels": {"a": {"value": ["Not a valid string."]}}},
        "_schema": ["Invalid input type."],
    }}
    assert flatten_errors(messages) == {
        "topic": ["Missing data for required field."],
        "meta.tenant_id": ["Not a valid string."],
        "meta.risk_tags.1": ["Not a valid string."],
        "meta.labels.a.value": ["Not a valid string."],
        "_schema": ["Invalid input type."],
    }
    assert flatten_errors({"json": {"meta": {"_schema": ["Invalid input type."]}}}) == {
        "meta": ["Invalid input type."]}
