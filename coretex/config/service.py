"""The config service: documents by scope -> one validated effective config, versioned and hashed.

Every write (set, delete, load_base, rollback) takes the same path:

1. read every document and the version they are at;
2. apply the change in memory, merge (:mod:`coretex.config.documents` gives the order) and
   validate the system config and every tenant's and workflow's merge (:mod:`coretex.config.sections`);
3. commit documents, snapshot, history entry and notification with ``lua/config_commit.lua``,
   which refuses when the version moved since step 1; the write is then recomputed from step 1.

An invalid change raises :class:`ConfigInvalidError` before step 3: nothing is written and the
previous snapshot keeps serving. History is append-only and bounded; a rollback restores the
documents of an old version as a new version. Key layout: :mod:`coretex.config.keys`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from coretex.config.base_files import read_base_files
from coretex.config.documents import (
    BASE_ID,
    ConfigDocument,
    DocumentSet,
    check_address,
    check_document,
)
from coretex.config.errors import ConfigConflictError, ConfigNotLoadedError
from coretex.config.keys import ConfigKeys
from coretex.config.merge import merge_patch
from coretex.config.policy_bundles import PolicyBundle, PolicyBundleChange, PolicyBundleStore
from coretex.config.snapshot import HistoryEntry, Snapshot, canonical_json, sha256_hex
from coretex.errors import ConfigError, NotFoundError
from coretex.settings import Settings
from coretex.store._redis import load_script, redis_errors

logger = logging.getLogger(__name__)
_SCAN_BATCH = 20
_MAX_AUTHOR = 200
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class ConfigServiceOptions:
    history_maxlen: int = 100
    """Commits kept in the history, each with the full config and documents: the rollback horizon."""
    max_document_bytes: int = 1024 * 1024
    """Largest config document, in bytes of canonical JSON."""
    commit_attempts: int = 5
    """How often a write is recomputed when other writers commit first, before ConfigConflictError."""
    policy_history_maxlen: int = 1000
    """Policy bundle changes kept in their history stream (content included)."""
    max_policy_bundle_bytes: int = 256 * 1024
    """Largest policy bundle, in bytes of YAML text."""


@dataclass(frozen=True)
class _Change:
    """What a write turns the documents into, and how the history will describe it."""

    documents: DocumentSet
    action: str
    scope: str = ""
    doc_id: str = ""
    rollback_of: int | None = None
    expect_sha256: str = ""
    """For a rollback: the hash the restored config must have."""


class ConfigService:
    def __init__(self, client: redis.Redis, settings: Settings, options: ConfigServiceOptions | None = None) -> None:
        self._r = client
        self._keys = ConfigKeys(settings.namespace)
        self._options = options or ConfigServiceOptions()
        self._commit_script = load_script(client, "config_commit")
        self._policy = PolicyBundleStore(
            client,
            self._keys,
            history_maxlen=self._options.policy_history_maxlen,
            max_bytes=self._options.max_policy_bundle_bytes,
        )

    # -- reads -------------------------------------------------------------------------------

    def version(self) -> int:
        """Version of the current effective config; 0 before the first commit."""
        with redis_errors("read config version"):
            return int(cast(str | None, self._r.get(self._keys.version)) or 0)

    def get(self, scope: str, doc_id: str) -> ConfigDocument:
        check_address(scope, doc_id)
        with redis_errors(f"read config {scope}/{doc_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._keys.document(scope, doc_id)))
        if not raw:
            raise NotFoundError(f"config document {scope}/{doc_id} not found")
        return ConfigDocument.from_fields(raw)

    def documents(self) -> DocumentSet:
        """Every config document, packs in install order."""
        return self._read()[1]

    def effective(self, tenant: str | None = None) -> Snapshot:
        """The effective config: the system's, or with ``tenant``'s overrides merged last.

        A tenant view shares the system version; its hash is that of its own merged config.
        """
        if tenant is not None:
            check_address("tenant", tenant)
        with redis_errors("read effective config"):
            pipe = self._r.pipeline(transaction=True)
            pipe.hgetall(self._keys.snapshot)
            if tenant is not None:
                pipe.hgetall(self._keys.document("tenant", tenant))
            rows = cast(list[dict[str, str]], pipe.execute())
        if not rows[0]:
            raise ConfigNotLoadedError("no effective config has been committed yet (load the base config first)")
        version, config = int(rows[0]["version"]), json.loads(rows[0]["config"])
        if tenant is None:
            return Snapshot(version, rows[0]["sha256"], config)
        if rows[1]:
            config = merge_patch(config, ConfigDocument.from_fields(rows[1]).doc)
        return Snapshot(version, sha256_hex(canonical_json(config)), config, tenant)

    def history(self, limit: int = 20) -> list[HistoryEntry]:
        """The latest commits, newest first."""
        with redis_errors("read config history"):
            rows = cast(list[tuple[str, dict[str, str]]], self._r.xrevrange(self._keys.history, count=limit))
        return [_history_entry(f) for _, f in rows]

    # -- writes ------------------------------------------------------------------------------

    def set(self, scope: str, doc_id: str, doc: Mapping[str, Any], author: str, message: str) -> Snapshot:
        """Write one document; return the new snapshot (the current one when the content is unchanged).

        Raise :class:`ConfigInvalidError` when the document, the system config or any tenant's
        config would be invalid; nothing is written then.
        """
        _check_meta(author, message)
        plain = check_document(scope, doc_id, doc, self._options.max_document_bytes)

        def plan(current: DocumentSet) -> _Change | None:
            existing = current.find(scope, doc_id)
            if existing is not None and canonical_json(existing.doc) == canonical_json(plain):
                return None
            written = ConfigDocument(scope, doc_id, plain, author, message, time.time())
            return _Change(current.with_document(written), "set", scope, doc_id)

        return self._commit(plan, author, message)

    def delete(self, scope: str, doc_id: str, author: str, message: str) -> Snapshot:
        """Remove one document (a pack uninstall, a tenant's overrides); refused if the result is invalid."""
        _check_meta(author, message)
        check_address(scope, doc_id)

        def plan(current: DocumentSet) -> _Change:
            if current.find(scope, doc_id) is None:
                raise NotFoundError(f"config document {scope}/{doc_id} not found")
            return _Change(current.without(scope, doc_id), "delete", scope, doc_id)

        return self._commit(plan, author, message)

    def load_base(self, config_dir: Path, author: str = "system", message: str = "load base config files") -> Snapshot:
        """Make ``system/base`` the sections of ``config_dir``; unchanged files commit nothing."""
        return self.set("system", BASE_ID, read_base_files(config_dir), author, message)

    def rollback(self, version: int, author: str, message: str) -> Snapshot:
        """Restore every document as it was at ``version``, committed as a new, higher version.

        The restored config has exactly the hash ``version`` had. Raise :class:`NotFoundError`
        when ``version`` is no longer (or not yet) in the history.
        """
        _check_meta(author, message)
        recorded = self._history_fields(version)
        target = DocumentSet.from_json(recorded["documents"])

        def plan(_current: DocumentSet) -> _Change:
            return _Change(target, "rollback", rollback_of=version, expect_sha256=recorded["sha256"])

        return self._commit(plan, author, message)

    # -- policy bundles ----------------------------------------------------------------------

    def put_policy_bundle(
        self, bundle_id: str, content: str, author: str, message: str, enabled: bool | None = None
    ) -> PolicyBundle:
        return self._policy.put(bundle_id, content, author, message, enabled)

    def get_policy_bundle(self, bundle_id: str) -> PolicyBundle:
        return self._policy.get(bundle_id)

    def list_policy_bundles(self, *, enabled_only: bool = False) -> list[PolicyBundle]:
        return self._policy.list_bundles(enabled_only=enabled_only)

    def set_policy_bundle_enabled(self, bundle_id: str, enabled: bool, author: str, message: str) -> PolicyBundle:
        return self._policy.set_enabled(bundle_id, enabled, author, message)

    def policy_bundle_history(self, bundle_id: str | None = None, limit: int = 50) -> list[PolicyBundleChange]:
        return self._policy.history(bundle_id, limit)

    # -- internals ---------------------------------------------------------------------------

    def _read(self) -> tuple[int, DocumentSet]:
        """Every document and the version it belongs to (the commit script re-checks the version)."""
        with redis_errors("read config documents"):
            pipe = self._r.pipeline(transaction=True)
            pipe.get(self._keys.version)
            pipe.smembers(self._keys.index)
            pipe.lrange(self._keys.pack_order, 0, -1)
            raw_version, members, order = pipe.execute()
            pipe = self._r.pipeline(transaction=True)
            for member in sorted(cast(set[str], members)):
                scope, _, doc_id = member.partition(":")
                pipe.hgetall(self._keys.document(scope, doc_id))
            rows = cast(list[dict[str, str]], pipe.execute())
        docs = [ConfigDocument.from_fields(raw) for raw in rows if raw]
        return int(raw_version or 0), DocumentSet.from_documents(docs, list(order))

    def _commit(self, plan: Callable[[DocumentSet], _Change | None], author: str, message: str) -> Snapshot:
        for _ in range(self._options.commit_attempts):
            version, current = self._read()
            change = plan(current)
            if change is None:
                return self.effective()
            config = change.documents.validate()
            config_json = canonical_json(config)
            digest = sha256_hex(config_json)
            if change.expect_sha256 and digest != change.expect_sha256:
                raise ConfigError(
                    f"restoring version {change.rollback_of} gives sha256 {digest}, not the recorded "
                    f"{change.expect_sha256}: the merge rules changed since; refusing an inexact rollback"
                )
            committed = self._write(version, current, change, config_json, digest, author, message)
            if committed is not None:
                logger.info("config version %d sha256 %s committed by %s: %s", committed, digest[:12], author, message)
                return Snapshot(committed, digest, config)
        raise ConfigConflictError(
            f"config kept changing under this write ({self._options.commit_attempts} attempts); try again"
        )

    def _write(
        self, version: int, current: DocumentSet, change: _Change, config_json: str, digest: str, author: str,
        message: str,
    ) -> int | None:
        """Run the commit script; the new version, or None when someone else committed first."""
        keys, ops = _document_ops(self._keys, current, change.documents)
        now = repr(time.time())
        snapshot = {"sha256": digest, "config": config_json, "author": author, "message": message, "updated_at": now}
        entry = {
            "sha256": digest,
            "config": config_json,
            "author": author,
            "message": message,
            "at": now,
            "action": change.action,
            "scope": change.scope,
            "id": change.doc_id,
            "rollback_of": "" if change.rollback_of is None else str(change.rollback_of),
            "documents": change.documents.to_json(),
        }
        with redis_errors("commit config"):
            status, value = self._commit_script(
                keys=[
                    self._keys.version,
                    self._keys.snapshot,
                    self._keys.history,
                    self._keys.index,
                    self._keys.pack_order,
                    *keys,
                ],
                args=[
                    version,
                    json.dumps(ops),
                    json.dumps(change.documents.pack_order),
                    json.dumps(snapshot),
                    json.dumps(entry),
                    self._options.history_maxlen,
                    self._keys.changed,
                ],
            )
        return int(value) if status == "ok" else None

    def _history_fields(self, version: int) -> dict[str, str]:
        upper = "+"
        while True:
            with redis_errors("read config history"):
                rows = cast(
                    list[tuple[str, dict[str, str]]],
                    self._r.xrevrange(self._keys.history, max=upper, min="-", count=_SCAN_BATCH),
                )
            for _, fields_ in rows:
                if fields_.get("version") == str(version):
                    return fields_
            if len(rows) < _SCAN_BATCH:
                raise NotFoundError(
                    f"config version {version} is not in the history (it keeps the last "
                    f"{self._options.history_maxlen} commits)"
                )
            upper = f"({rows[-1][0]}"


def _document_ops(keys: ConfigKeys, before: DocumentSet, after: DocumentSet) -> tuple[list[str], list[dict[str, Any]]]:
    """The document keys a commit touches and, aligned with them, what to do to each."""
    old = {d.member: d.to_fields() for d in before}
    new = {d.member: d for d in after}
    touched: list[str] = []
    ops: list[dict[str, Any]] = []
    for member, doc in new.items():
        fields_ = doc.to_fields()
        if old.get(member) != fields_:
            touched.append(keys.document(doc.scope, doc.id))
            ops.append({"member": member, "fields": fields_})
    for member, fields_ in old.items():
        if member not in new:
            touched.append(keys.document(fields_["scope"], fields_["id"]))
            ops.append({"member": member, "delete": True})
    return touched, ops


def _check_meta(author: str, message: str) -> None:
    if not author.strip() or len(author) > _MAX_AUTHOR:
        raise ConfigError(f"a config change needs an author of 1 to {_MAX_AUTHOR} characters, got {author!r}")
    if len(message) > _MAX_MESSAGE:
        raise ConfigError(f"a config change message is limited to {_MAX_MESSAGE} characters")


def _history_entry(fields_: Mapping[str, str]) -> HistoryEntry:
    rollback_of = fields_.get("rollback_of", "")
    return HistoryEntry(
        version=int(fields_["version"]),
        sha256=fields_["sha256"],
        author=fields_["author"],
        message=fields_["message"],
        at=float(fields_["at"]),
        action=fields_["action"],
        scope=fields_.get("scope", ""),
        doc_id=fields_.get("id", ""),
        rollback_of=int(rollback_of) if rollback_of else None,
        config=json.loads(fields_["config"]),
    )
