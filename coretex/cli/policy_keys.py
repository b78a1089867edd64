"""``coretexctl policy keygen | sign | verify``: Ed25519 keys and signatures for policy bundles.

Offline commands (no gateway needed). The kernel refuses unsigned or badly signed bundles
outside ``CORETEX_DEV_MODE``; it trusts the key ids listed in ``CORETEX_POLICY_TRUSTED_KEYS``
(a YAML file of ``"<key id>": <base64 public key>`` lines, as ``keygen`` prints them).
"""

from __future__ import annotations

from pathlib import Path

import click

from coretex.errors import PolicyError
from coretex.kernel.signing_keys import load_private_key, load_trusted_keys, write_keypair
from coretex.kernel.sources import SIGNATURE_SUFFIX
from coretex.policy.signing import Signature, sign_bundle, sign_embedded, verify_bundle

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("policy")
def policy_keys() -> None:
    """Sign policy bundles and manage the signing keys."""


@policy_keys.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <name>.pem (private, mode 0600) and <name>.pub.")
@click.option("--name", default="policy-signing", show_default=True, help="File name stem of the key pair.")
def keygen(out_dir: Path, name: str) -> None:
    """Generate an Ed25519 key pair for signing policy bundles."""
    try:
        pair = write_keypair(out_dir, name)
    except (PolicyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"private key: {pair.private_path} (keep it secret)")
    click.echo(f"public key:  {pair.public_path}")
    click.echo(f"key id:      {pair.key_id}")
    click.echo("add this line to the CORETEX_POLICY_TRUSTED_KEYS file of every kernel:")
    click.echo(f'"{pair.key_id}": {pair.public_base64}')


@policy_keys.command("sign")
@click.argument("file", type=_FILE)
@click.option("--key", "key_path", required=True, type=_FILE, help="PEM private key from `keygen`.")
@click.option("--embedded", is_flag=True,
              help="Print FILE with its signature as the first line (the form config-service bundles are "
                   "published in) instead of writing FILE.sig.")
def sign(file: Path, key_path: Path, embedded: bool) -> None:
    """Sign FILE exactly as it is (write FILE.sig next to it)."""
    try:
        key = load_private_key(key_path)
        if embedded:
            click.echo(sign_embedded(file.read_text(encoding="utf-8"), key), nl=False)
            return
        signature = sign_bundle(file.read_bytes(), key)
        target = file.with_name(file.name + SIGNATURE_SUFFIX)
        target.write_text(signature.to_json() + "\n", encoding="utf-8")
    except (PolicyError, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"signed {file} with key {signature.key_id}: {target}")


@policy_keys.command("verify")
@click.argument("file", type=_FILE)
@click.option("--trusted-keys", required=True, envvar="CORETEX_POLICY_TRUSTED_KEYS", type=_FILE,
              help="Trusted keys file (env CORETEX_POLICY_TRUSTED_KEYS).")
def verify(file: Path, trusted_keys: Path) -> None:
    """Check FILE against FILE.sig and the trusted keys, as the kernel does (exit 1 if it fails)."""
    signature_path = file.with_name(file.name + SIGNATURE_SUFFIX)
    try:
        trusted, _ = load_trusted_keys(trusted_keys)
        signature = Signature.from_json(signature_path.read_bytes())
        key_id = verify_bundle(file.read_bytes(), signature, trusted)
    except (PolicyError, OSError) as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    click.echo(f"{file}: signature OK (key {key_id})")
