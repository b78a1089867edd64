"""Ed25519 signing of policy sources: round trips, every way a signature must fail, keys, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coretex.cli.policy_keys import policy_keys
from coretex.policy.signing import (
    ALGORITHM,
    SIGNATURE_HEADER,
    PolicySignatureError,
    Signature,
    TrustedKeys,
    embed_signature,
    generate_private_key,
    key_id_of,
    parse_trusted_keys,
    private_key_from_pem,
    private_key_to_pem,
    public_key_bytes,
    public_key_to_base64,
    sign_bundle,
    sign_embedded,
    split_embedded_signature,
    verify_bundle,
)

BUNDLE = (
    b"version: 1\n"
    b"rules:\n"
    b"  - id: allow-jobs\n"
    b"    match: {topics: ['job.*']}\n"
    b"    decision: allow\n"
    b"    reason: jobs run \xe2\x9c\x93\n"
)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {key_id_of(key.public_key()): key.public_key()}


def test_sign_verify_round_trip(key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    signature = sign_bundle(BUNDLE, key)
    assert signature.algorithm == ALGORITHM == "ed25519"
    assert verify_bundle(BUNDLE, signature, trusted) == signature.key_id
    # and through the JSON form written to .sig files
    assert verify_bundle(BUNDLE, Signature.from_json(signature.to_json()), trusted) == signature.key_id


@pytest.mark.parametrize("position", [0, len(BUNDLE) // 2, len(BUNDLE) - 1])
def test_one_flipped_byte_fails(key: Ed25519PrivateKey, trusted: TrustedKeys, position: int) -> None:
    signature = sign_bundle(BUNDLE, key)
    tampered = bytearray(BUNDLE)
    tampered[position] ^= 0x01
    with pytest.raises(PolicySignatureError, match="does not match the content"):
        verify_bundle(bytes(tampered), signature, trusted)


def test_flipped_signature_byte_fails(key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    signature = sign_bundle(BUNDLE, key)
    raw = bytearray(signature.signature)
    raw[10] ^= 0x80
    with pytest.raises(PolicySignatureError, match="does not match"):
        verify_bundle(BUNDLE, Signature(signature.key_id, bytes(raw)), trusted)


def test_unknown_key_id_fails(trusted: TrustedKeys) -> None:
    stranger = generate_private_key()
    signature = sign_bundle(BUNDLE, stranger)
    with pytest.raises(PolicySignatureError, match="not trusted"):
        verify_bundle(BUNDLE, signature, trusted)
    with pytest.raises(PolicySignatureError, match="none configured"):
        verify_bundle(BUNDLE, signature, {})


def test_trusted_key_id_with_another_keys_signature_fails(key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    # A valid signature by another key, relabelled with the trusted id, must not pass.
    forged = Signature(key_id_of(key.public_key()), generate_private_key().sign(BUNDLE))
    with pytest.raises(PolicySignatureError, match="does not match"):
        verify_bundle(BUNDLE, forged, trusted)


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ED25519", ""])
def test_wrong_algorithm_field_fails(key: Ed25519PrivateKey, trusted: TrustedKeys, algorithm: str) -> None:
    signature = sign_bundle(BUNDLE, key)
    data = json.loads(signature.to_json())
    data["algorithm"] = algorithm
    with pytest.raises(PolicySignatureError, match="algorithm"):
        verify_bundle(BUNDLE, Signature.from_json(json.dumps(data)), trusted)


def test_key_id_is_sha256_prefix_of_the_raw_public_key(key: Ed25519PrivateKey) -> None:
    raw = public_key_bytes(key.public_key())
    assert len(raw) == 32
    assert key_id_of(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_signature_json_form(key: Ed25519PrivateKey) -> None:
    signature = sign_bundle(BUNDLE, key)
    data = json.loads(signature.to_json())
    assert set(data) == {"algorithm", "key_id", "signature"}
    assert base64.b64decode(data["signature"]) == signature.signature


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "exactly algorithm, key_id and signature"),
        ('{"algorithm": "ed25519", "key_id": "ab"}', "exactly"),
        ('{"algorithm": "ed25519", "key_id": "ab", "signature": "AA==", "extra": 1}', "exactly"),
        ('{"algorithm": "ed25519", "key_id": 7, "signature": "AA=="}', "strings"),
        ('{"algorithm": "ed25519", "key_id": "ab", "signature": "%%%"}', "not base64"),
    ],
)
def test_malformed_signatures_are_refused(text: str, message: str) -> None:
    with pytest.raises(PolicySignatureError, match=message):
        Signature.from_json(text)


# --- trusted keys and key files ------------------------------------------------------------------------


def test_trusted_keys_parse_and_check_their_ids(key: Ed25519PrivateKey) -> None:
    key_id, encoded = key_id_of(key.public_key()), public_key_to_base64(key.public_key())
    parsed = parse_trusted_keys(f"{key_id}: {encoded}\n", "keys.yaml")
    assert list(parsed) == [key_id]
    assert parse_trusted_keys(json.dumps({key_id: encoded}), "keys.json").keys() == {key_id}
    assert parse_trusted_keys("", "empty.yaml") == {}
    with pytest.raises(PolicySignatureError, match="ids are not aliases"):
        parse_trusted_keys(f"'00000000000000ff': {encoded}\n", "keys.yaml")
    with pytest.raises(PolicySignatureError, match="quote key ids"):
        parse_trusted_keys(f"0000000000000000: {encoded}\n", "keys.yaml")
    with pytest.raises(PolicySignatureError, match="must map key ids"):
        parse_trusted_keys(f"- {encoded}\n", "keys.yaml")
    with pytest.raises(PolicySignatureError, match="32 bytes"):
        parse_trusted_keys(f"{key_id}: {base64.b64encode(b'short').decode()}\n", "keys.yaml")


def test_private_key_pem_round_trip_and_other_key_types(key: Ed25519PrivateKey) -> None:
    again = private_key_from_pem(private_key_to_pem(key))
    assert key_id_of(again.public_key()) == key_id_of(key.public_key())
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PolicySignatureError, match="Ed25519"):
        private_key_from_pem(ec_pem)
    with pytest.raises(PolicySignatureError, match="PEM"):
        private_key_from_pem(b"-----BEGIN NOTHING-----\n")


# --- signatures embedded in config-service bundles ---------------------------------------------------


def test_embedded_signature_round_trip(key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    text = BUNDLE.decode("utf-8")
    stored = sign_embedded(text, key)
    assert stored.startswith(SIGNATURE_HEADER) and stored.endswith(text)
    signature_text, body = split_embedded_signature(stored)
    assert body == BUNDLE and signature_text is not None
    verify_bundle(body, Signature.from_json(signature_text), trusted)
    assert embed_signature(text, Signature.from_json(signature_text)) == stored


def test_embedded_signature_detects_tampering(key: Ed25519PrivateKey, trusted: TrustedKeys) -> None:
    stored = sign_embedded(BUNDLE.decode("utf-8"), key).replace("allow-jobs", "allow-jobz")
    signature_text, body = split_embedded_signature(stored)
    assert signature_text is not None
    with pytest.raises(PolicySignatureError, match="does not match"):
        verify_bundle(body, Signature.from_json(signature_text), trusted)


def test_content_without_a_header_is_unsigned() -> None:
    assert split_embedded_signature(BUNDLE.decode("utf-8")) == (None, BUNDLE)
    # a comment further down is not a signature
    assert split_embedded_signature("version: 1\n" + SIGNATURE_HEADER + "{}\n")[0] is None


def test_signing_module_stays_pure() -> None:
    probe = (
        "import sys, coretex.policy.signing\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "{'redis', 'celery', 'kombu', 'flask', 'flask_smorest', 'grpc'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# --- coretexctl policy keygen / sign / verify ------------------------------------------------------------


def test_keygen_sign_verify_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(policy_keys, ["keygen", "--out", str(tmp_path / "keys")])
    assert made.exit_code == 0, made.output
    private, public = tmp_path / "keys" / "policy-signing.pem", tmp_path / "keys" / "policy-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    trust_line = made.output.strip().splitlines()[-1]
    key_id = trust_line.split(":")[0].strip('"')
    assert f"key id:      {key_id}" in made.output and public.read_text().strip() == trust_line.split(": ")[1]
    (tmp_path / "trusted.yaml").write_text(trust_line + "\n")

    again = runner.invoke(policy_keys, ["keygen", "--out", str(tmp_path / "keys")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output

    bundle = tmp_path / "base.yaml"
    bundle.write_bytes(BUNDLE)
    signed = runner.invoke(policy_keys, ["sign", str(bundle), "--key", str(private)])
    assert signed.exit_code == 0, signed.output
    assert Signature.from_json((tmp_path / "base.yaml.sig").read_text()).key_id == key_id

    verify = ["verify", str(bundle), "--trusted-keys", str(tmp_path / "trusted.yaml")]
    ok = runner.invoke(policy_keys, verify)
    assert ok.exit_code == 0 and f"signature OK (key {key_id})" in ok.output
    bundle.write_bytes(BUNDLE.replace(b"allow", b"allov", 1))
    bad = runner.invoke(policy_keys, verify)
    assert bad.exit_code == 1 and "does not match" in bad.output

    embedded = runner.invoke(policy_keys, ["sign", str(bundle), "--key", str(private), "--embedded"])
    assert embedded.exit_code == 0
    signature_text, body = split_embedded_signature(embedded.output)
    assert body == bundle.read_bytes() and signature_text is not None
