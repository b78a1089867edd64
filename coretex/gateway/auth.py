"""API keys, principals and roles. Secure by default.

The key file (``CORETEX_API_KEYS_FILE``) holds SHA-256 hashes only, never keys::

    keys:
      - {name: dev, sha256: <hex of sha256(key)>, tenant: default, role: admin}

A request authenticates with ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No file,
or a file with no keys, means every ``/api/v1`` request is 401. The principal (name, tenant,
role) comes from the matched key alone: headers such as ``X-Tenant`` or ``X-Principal-Role``
are never read. Roles: ``admin`` (any tenant), ``operator``, ``submitter``, ``viewer``, and
``secops`` (changes, publishes and rolls back policy bundles; reads every tenant's decisions).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from flask import g, request

from coretex.errors import ConfigError
from coretex.gateway.problems import Problem

log = logging.getLogger(__name__)

ADMIN = "admin"
OPERATOR = "operator"
SUBMITTER = "submitter"
VIEWER = "viewer"
SECOPS = "secops"
ROLES = (ADMIN, OPERATOR, SUBMITTER, VIEWER, SECOPS)
SUBMIT_ROLES = frozenset({ADMIN, OPERATOR, SUBMITTER})
READ_ROLES = frozenset(ROLES)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coretex"'}
_NAME = "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
# No ':' in tenants: they are part of Redis key names (``<ns>:idem:<tenant>:<key>``).
_TENANT = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
KEY_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keys": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "sha256", "tenant", "role"],
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "tenant": {"type": "string", "pattern": _TENANT},
                    "role": {"enum": list(ROLES)},
                },
            },
        }
    },
}


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by their API key."""

    name: str
    tenant: str
    role: str

    def can_read_tenant(self, tenant: str) -> bool:
        return self.role == ADMIN or self.tenant == tenant


@dataclass(frozen=True)
class _KeyEntry:
    principal: Principal
    digest: bytes


class KeyRing:
    """The configured keys; :meth:`match` compares against every hash in constant time."""

    def __init__(self, entries: Iterable[tuple[Principal, str]] = ()) -> None:
        self._entries = tuple(_KeyEntry(p, bytes.fromhex(h)) for p, h in entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_file(cls, path: Path | None) -> KeyRing:
        """Load ``path``; a missing path gives an empty ring (all requests 401), a bad file raises."""
        if path is None or not path.exists():
            log.warning("no API key file at %s: every /api/v1 request will be refused (401)", path)
            return cls()
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.from_config(doc, str(path))

    @classmethod
    def from_config(cls, doc: Any, source: str = "api keys") -> KeyRing:
        errors = sorted(jsonschema.Draft202012Validator(KEY_FILE_SCHEMA).iter_errors(doc), key=str)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            raise ConfigError(f"{source}: {where}: {errors[0].message}")
        items = doc.get("keys") or []
        _reject_duplicates(items, source)
        return cls((Principal(i["name"], i["tenant"], i["role"]), i["sha256"]) for i in items)

    def match(self, key: str) -> Principal | None:
        presented = hashlib.sha256(key.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:  # no early exit: timing does not tell which entry matched
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def _reject_duplicates(items: list[dict[str, str]], source: str) -> None:
    for field in ("name", "sha256"):
        values = [i[field] for i in items]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            shown = dupes[0] if field == "name" else "(a hash)"
            raise ConfigError(f"{source}: duplicate key {field} {shown}")


# ---- request side ---------------------------------------------------------------------------
def presented_key() -> str | None:
    """The key of the current request, from ``Authorization: Bearer`` or ``X-API-Key``."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Problem(401, "Authorization must be 'Bearer <api key>'", code="unauthenticated",
                          headers=_CHALLENGE)
        return credentials.strip()
    return request.headers.get("X-API-Key") or None


def authenticate(keys: KeyRing) -> Principal:
    """Set and return ``g.principal`` for the current request, or raise a 401 problem."""
    key = presented_key()
    if key is None:
        raise Problem(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                      code="unauthenticated", headers=_CHALLENGE)
    principal = keys.match(key)
    if principal is None:
        raise Problem(401, "the API key is not valid", code="unauthenticated", headers=_CHALLENGE)
    g.principal = principal
    return principal


def current_principal() -> Principal:
    principal = g.get("principal")
    if not isinstance(principal, Principal):  # a route outside the authenticated prefix
        raise Problem(401, "an API key is required", code="unauthenticated", headers=_CHALLENGE)
    return principal


def require_role(allowed: frozenset[str]) -> Principal:
    """The current principal if its role is in ``allowed``, else a 403 problem."""
    principal = current_principal()
    if principal.role not in allowed:
        raise Problem(403, f"role {principal.role!r} may not do this (needs one of {sorted(allowed)})",
                      code="forbidden")
    return principal


# ---- key management (used by `coretex up`) ----------------------------------------------------
def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_key_file(path: Path, entries: Iterable[Mapping[str, str]]) -> None:
    """Write a key file of ``{name, key | sha256, tenant, role}`` entries; keys are stored hashed.

    The file is validated like the gateway reads it, written atomically and made owner-only.
    """
    items = [_hashed_entry(e) for e in entries]
    doc = {"keys": items}
    KeyRing.from_config(doc, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".api-keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(doc, handle, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hashed_entry(entry: Mapping[str, str]) -> dict[str, str]:
    if "key" in entry:
        digest = hash_key(entry["key"])
    elif "sha256" in entry:
        digest = entry["sha256"]
    else:
        raise ConfigError(f"key entry {entry.get('name', '?')!r} needs 'key' or 'sha256'")
    return {"name": entry.get("name", ""), "sha256": digest, "tenant": entry.get("tenant", ""),
            "role": entry.get("role", "")}
