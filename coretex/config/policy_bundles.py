"""Policy bundles stored by the config service under ``<ns>:cfg:system:policy``.

Packs and operators publish bundles (id such as ``secops/workflows``, YAML content) here; the
kernel loads the enabled ones. Content is stored verbatim and parsed with the kernel's own parser
before it is accepted, so a bundle the kernel could not load is refused at the door. Every change
(content or enabled flag) is appended, content included, to a bounded history stream.
See :mod:`coretex.config.keys` for the key layout and ``lua/config_policy.lua`` for the write.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import cast

import redis

from coretex.config.errors import PolicyBundleInvalidError
from coretex.config.keys import ConfigKeys
from coretex.config.snapshot import sha256_hex
from coretex.errors import ConfigError, NotFoundError, PolicyError
from coretex.policy.bundle import parse_bundle
from coretex.store._redis import load_script, redis_errors

_BUNDLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,3}$")
_SCAN_BATCH = 50


@dataclass(frozen=True)
class PolicyBundle:
    bundle_id: str
    content: str = field(repr=False)
    """The YAML text exactly as it was put."""
    sha256: str
    """sha256 of ``content`` (UTF-8)."""
    author: str
    message: str
    created_at: float
    updated_at: float
    enabled: bool
    revision: int
    """1 on the first put, +1 on every later change of content or enabled flag."""


@dataclass(frozen=True)
class PolicyBundleChange:
    """One entry of the bundle history, newest first when listed."""

    bundle_id: str
    action: str
    """``put``, ``enable`` or ``disable``."""
    revision: int
    enabled: bool
    author: str
    message: str
    at: float
    sha256: str
    content: str = field(repr=False)
    """The content put by this change; empty for enable/disable."""


class PolicyBundleStore:
    def __init__(self, client: redis.Redis, keys: ConfigKeys, *, history_maxlen: int, max_bytes: int) -> None:
        self._r = client
        self._keys = keys
        self._history_maxlen = history_maxlen
        self._max_bytes = max_bytes
        self._write = load_script(client, "config_policy")

    def put(self, bundle_id: str, content: str, author: str, message: str, enabled: bool | None = None) -> PolicyBundle:
        """Store ``content`` as the bundle's new revision; ``enabled=None`` keeps the flag (new: enabled)."""
        _check_id(bundle_id)
        _check_author(author)
        if len(content.encode("utf-8")) > self._max_bytes:
            raise PolicyBundleInvalidError(f"policy bundle {bundle_id!r}: larger than {self._max_bytes} bytes")
        try:
            parse_bundle(bundle_id, content)
        except PolicyError as exc:
            raise PolicyBundleInvalidError(str(exc)) from exc
        flag = "" if enabled is None else ("1" if enabled else "0")
        return self._apply("put", bundle_id, content, sha256_hex(content), flag, author, message)

    def set_enabled(self, bundle_id: str, enabled: bool, author: str, message: str) -> PolicyBundle:
        _check_id(bundle_id)
        _check_author(author)
        return self._apply("enable", bundle_id, "", "", "1" if enabled else "0", author, message)

    def get(self, bundle_id: str) -> PolicyBundle:
        with redis_errors(f"read policy bundle {bundle_id}"):
            raw = cast(str | None, self._r.hget(self._keys.policy, bundle_id))
        if raw is None:
            raise NotFoundError(f"policy bundle {bundle_id!r} not found")
        return _decode(bundle_id, raw)

    def list_bundles(self, *, enabled_only: bool = False) -> list[PolicyBundle]:
        """Every bundle, sorted by id."""
        with redis_errors("list policy bundles"):
            raw = cast(dict[str, str], self._r.hgetall(self._keys.policy))
        bundles = [_decode(bundle_id, raw[bundle_id]) for bundle_id in sorted(raw)]
        return [b for b in bundles if b.enabled or not enabled_only]

    def history(self, bundle_id: str | None = None, limit: int = 50) -> list[PolicyBundleChange]:
        """Changes newest first, of one bundle or of all; at most ``limit``."""
        changes: list[PolicyBundleChange] = []
        upper = "+"
        while len(changes) < limit:
            with redis_errors("read policy bundle history"):
                rows = cast(
                    list[tuple[str, dict[str, str]]],
                    self._r.xrevrange(self._keys.policy_history, max=upper, min="-", count=_SCAN_BATCH),
                )
            changes.extend(_change(f) for _, f in rows if bundle_id is None or f["bundle"] == bundle_id)
            if len(rows) < _SCAN_BATCH:
                break
            upper = f"({rows[-1][0]}"
        return changes[:limit]

    def _apply(self, action: str, bundle_id: str, content: str, digest: str, flag: str, author: str,
               message: str) -> PolicyBundle:
        with redis_errors(f"{action} policy bundle {bundle_id}"):
            status, record = self._write(
                keys=[self._keys.policy, self._keys.policy_history],
                args=[action, bundle_id, content, digest, flag, author, message, repr(time.time()),
                      self._history_maxlen, self._keys.policy_changed],
            )
        if status == "missing":
            raise NotFoundError(f"policy bundle {bundle_id!r} not found")
        return _decode(bundle_id, str(record))


def _check_id(bundle_id: str) -> None:
    if not _BUNDLE_ID_RE.match(bundle_id):
        raise ConfigError(f"policy bundle id must match {_BUNDLE_ID_RE.pattern}, got {bundle_id!r}")


def _check_author(author: str) -> None:
    if not author.strip():
        raise ConfigError("a config change needs an author")


def _decode(bundle_id: str, raw: str) -> PolicyBundle:
    data = json.loads(raw)
    return PolicyBundle(
        bundle_id=bundle_id,
        content=data["content"],
        sha256=data["sha256"],
        author=data["author"],
        message=data["message"],
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        enabled=bool(data["enabled"]),
        revision=int(data["revision"]),
    )


def _change(fields_: dict[str, str]) -> PolicyBundleChange:
    return PolicyBundleChange(
        bundle_id=fields_["bundle"],
        action=fields_["action"],
        revision=int(fields_["revision"]),
        enabled=fields_["enabled"] == "1",
        author=fields_["author"],
        message=fields_["message"],
        at=float(fields_["at"]),
        sha256=fields_["sha256"],
        content=fields_.get("content", ""),
    )
