"""Policy signing keys on disk: the private key that signs, the trusted public keys that verify.

Files (see :mod:`coretex.policy.signing` for the formats):

- private key: unencrypted PKCS#8 PEM, written with mode 0600 (``coretexctl policy keygen``);
- public key: ``<name>.pub``, one line of base64 over the raw 32-byte key;
- trusted keys (``CORETEX_POLICY_TRUSTED_KEYS``): one YAML or JSON file mapping key ids to base64
  public keys, e.g. ``"3f9a0c1d2b4e5f60": q1w2...=`` (quote the ids). One file rather than a folder of ``*.pub``
  files, so adding or revoking a key is one atomic file replace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coretex.policy.signing import (
    PolicySignatureError,
    TrustedKeys,
    generate_private_key,
    key_id_of,
    parse_trusted_keys,
    private_key_from_pem,
    private_key_to_pem,
    public_key_to_base64,
)


@dataclass(frozen=True)
class KeyPair:
    key_id: str
    private_path: Path
    public_path: Path
    public_base64: str


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (:class:`PolicySignatureError` otherwise)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicySignatureError(f"cannot read policy signing key {str(path)!r}: {exc}") from exc
    return private_key_from_pem(data)


def load_trusted_keys(path: Path | None) -> tuple[TrustedKeys, bytes]:
    """(keys by id, the file's bytes) of the trusted-keys file; no file configured = no keys."""
    if path is None:
        return {}, b""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicySignatureError(f"cannot read trusted keys {str(path)!r}: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicySignatureError(f"trusted keys {str(path)!r}: not UTF-8") from exc
    return parse_trusted_keys(text, repr(str(path))), data


def write_keypair(directory: Path, name: str = "policy-signing") -> KeyPair:
    """Generate a key pair into ``directory``: ``<name>.pem`` (0600, never overwritten) and ``<name>.pub``."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.pem", directory / f"{name}.pub"
    key = generate_private_key()
    # O_EXCL: never replace an existing private key; 0600 from the first byte on disk.
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise PolicySignatureError(f"{private_path} already exists; refusing to overwrite a private key") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_to_pem(key))
    public = public_key_to_base64(key.public_key())
    public_path.write_text(public + "\n")
    return KeyPair(key_id_of(key.public_key()), private_path, public_path, public)
