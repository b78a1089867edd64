"""Ed25519 signatures over policy sources (pure: bytes in, verdicts out; no file or network I/O).

What is signed is what is stored, verbatim: the exact UTF-8 bytes of a bundle file, of a URL's
body, or of a config-service bundle's content (below its signature line). Nothing is normalised
first, so a verifier never has to agree with the signer on a canonical form, and a persisted
last-known-good re-verifies byte for byte.

A signature travels as JSON: ``{"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}``.

- Files and URLs: a detached signature next to the source, ``<file>.sig`` / ``<url>.sig``.
- Config-service bundles (whose record has no signature field): the first line of the stored
  content is a YAML comment ``# coretex-signature: {...}`` and the signed bytes are everything
  after that line (:func:`embed_signature`, :func:`split_embedded_signature`). The comment keeps
  the content a valid bundle for every YAML reader, and content and signature change together in
  one atomic write.

A key id is the first 16 hex digits of sha256 over the raw 32-byte public key. The trusted keys
(:func:`parse_trusted_keys`) map key ids to base64 raw public keys, e.g. ``"3f9a0c1d2b4e5f60": q1w2...=``
(ids quoted: YAML would read an all-digit or ``1e5``-like id as a number); an id that does not
match its key is refused, so a trusted-keys file cannot alias one key under another's id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coretex.errors import PolicyError

ALGORITHM = "ed25519"
SIGNATURE_HEADER = "# coretex-signature: "
"""Prefix of the first line of a config-service bundle that carries its own signature."""
KEY_ID_HEX = 16

TrustedKeys = Mapping[str, Ed25519PublicKey]


class PolicySignatureError(PolicyError):
    """A policy source is unsigned, badly signed, signed by an untrusted key, or a key is unusable."""

    code = "policy_signature_invalid"


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes
    algorithm: str = ALGORITHM

    def to_json(self) -> str:
        """One line of JSON, sorted keys (the form written to ``.sig`` files and signature headers)."""
        encoded = base64.b64encode(self.signature).decode("ascii")
        body = {"algorithm": self.algorithm, "key_id": self.key_id, "signature": encoded}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Signature:
        """Parse a signature; :class:`PolicySignatureError` when it is not one."""
        try:
            data: Any = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PolicySignatureError(f"signature is not JSON: {exc}") from exc
        if not isinstance(data, dict) or set(data) != {"algorithm", "key_id", "signature"}:
            raise PolicySignatureError("signature must be a JSON object with exactly algorithm, key_id and signature")
        if not all(isinstance(data[k], str) for k in data):
            raise PolicySignatureError("signature fields must be strings")
        try:
            raw = base64.b64decode(data["signature"], validate=True)
        except binascii.Error as exc:
            raise PolicySignatureError(f"signature is not base64: {exc}") from exc
        return cls(key_id=data["key_id"], signature=raw, algorithm=data["algorithm"])


# --- keys ------------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the raw public key."""
    return hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:KEY_ID_HEX]


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_to_base64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key_bytes(public_key)).decode("ascii")


def public_key_from_base64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise PolicySignatureError(f"not a base64 raw Ed25519 public key (32 bytes): {exc}") from exc


def private_key_to_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 private key; :class:`PolicySignatureError` otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PolicySignatureError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PolicySignatureError(f"policy signing keys are Ed25519, got {type(key).__name__}")
    return key


def parse_trusted_keys(text: str, source: str) -> dict[str, Ed25519PublicKey]:
    """``{key_id: base64 public key}`` (YAML or JSON) -> public keys by id, each id checked against its key."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicySignatureError(f"trusted keys {source}: not YAML/JSON: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicySignatureError(f"trusted keys {source}: must map key ids to base64 public keys")
    keys: dict[str, Ed25519PublicKey] = {}
    for key_id, encoded in data.items():
        if not isinstance(key_id, str) or not isinstance(encoded, str):
            raise PolicySignatureError(
                f"trusted keys {source}: entry {key_id!r} must be '\"<key id>\": <base64 key>' "
                "(quote key ids: YAML reads some hex ids as numbers)"
            )
        try:
            public_key = public_key_from_base64(encoded)
        except PolicySignatureError as exc:
            raise PolicySignatureError(f"trusted keys {source}: key {key_id!r}: {exc}") from exc
        actual = key_id_of(public_key)
        if actual != key_id:
            raise PolicySignatureError(f"trusted keys {source}: key {key_id!r} has id {actual} (ids are not aliases)")
        keys[key_id] = public_key
    return keys


# --- signing and verifying -------------------------------------------------------------------------


def sign_bundle(content: bytes, private_key: Ed25519PrivateKey) -> Signature:
    """Sign ``content`` exactly as it will be stored."""
    return Signature(key_id=key_id_of(private_key.public_key()), signature=private_key.sign(content))


def verify_bundle(content: bytes, signature: Signature, trusted: TrustedKeys) -> str:
    """Check ``signature`` over ``content`` against ``trusted``; return the signer's key id.

    Raise :class:`PolicySignatureError` for another algorithm, an untrusted key id or a signature
    that does not match the bytes.
    """
    if signature.algorithm != ALGORITHM:
        raise PolicySignatureError(f"signature algorithm {signature.algorithm!r} is not {ALGORITHM}")
    public_key = trusted.get(signature.key_id)
    if public_key is None:
        known = ", ".join(sorted(trusted)) or "none configured"
        raise PolicySignatureError(f"signed by key {signature.key_id!r}, which is not trusted (trusted: {known})")
    try:
        public_key.verify(signature.signature, content)
    except InvalidSignature as exc:
        raise PolicySignatureError(
            f"signature by key {signature.key_id} does not match the content (modified after signing?)"
        ) from exc
    return signature.key_id


# --- signatures embedded in config-service bundles -------------------------------------------------


def embed_signature(content: str, signature: Signature) -> str:
    """``content`` with its signature as a first comment line (what the config service stores)."""
    return f"{SIGNATURE_HEADER}{signature.to_json()}\n{content}"


def sign_embedded(content: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``content`` (UTF-8) and return it with the signature line on top."""
    return embed_signature(content, sign_bundle(content.encode("utf-8"), private_key))


def split_embedded_signature(content: str) -> tuple[str | None, bytes]:
    """(signature JSON text or None, the signed bytes) of a stored config-service bundle.

    Without a signature line the whole content is returned as the (unsigned) bytes.
    """
    if not content.startswith(SIGNATURE_HEADER):
        return None, content.encode("utf-8")
    header, newline, body = content.partition("\n")
    if not newline:
        return header[len(SIGNATURE_HEADER):], b""
    return header[len(SIGNATURE_HEADER):], body.encode("utf-8")
