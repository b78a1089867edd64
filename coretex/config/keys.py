"""Redis key layout of the config service (every key under ``<ns>:cfg:``).

    <ns>:cfg:<scope>:<id>            hash    one config document: scope, id, doc (canonical JSON),
                                             author, message, updated_at, schema_version "1"
    <ns>:cfg:index                   set     "<scope>:<id>" of every config document
    <ns>:cfg:pack_order              list    pack ids in install order (merge order of pack overlays)
    <ns>:cfg:version                 string  INCR counter: version of the latest effective config
    <ns>:cfg:snapshot                hash    version, sha256, config (canonical JSON), author,
                                             message, updated_at of the effective system config
    <ns>:cfg:history                 stream  one entry per commit (MAXLEN): version, sha256, author,
                                             message, at, action, scope, id, rollback_of, config and
                                             documents (every document, so rollback is exact)
    <ns>:cfg:changed                 pubsub  {"version", "sha256"} after each commit
    <ns>:cfg:system:policy           hash    policy bundle id -> JSON record {content, author,
                                             message, created_at, updated_at, enabled, revision, sha256}
    <ns>:cfg:system:policy:history   stream  one entry per bundle change, content included (MAXLEN)
    <ns>:cfg:policy:changed          pubsub  {"bundle", "revision"} after each bundle change

Documents, index, pack order, version, snapshot, history and the notification are written by one
Lua script (``lua/config_commit.lua``) that first checks the version the change was computed on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigKeys:
    namespace: str

    @property
    def _root(self) -> str:
        return f"{self.namespace}:cfg"

    def document(self, scope: str, doc_id: str) -> str:
        return f"{self._root}:{scope}:{doc_id}"

    @property
    def index(self) -> str:
        return f"{self._root}:index"

    @property
    def pack_order(self) -> str:
        return f"{self._root}:pack_order"

    @property
    def version(self) -> str:
        return f"{self._root}:version"

    @property
    def snapshot(self) -> str:
        return f"{self._root}:snapshot"

    @property
    def history(self) -> str:
        return f"{self._root}:history"

    @property
    def changed(self) -> str:
        return f"{self._root}:changed"

    @property
    def policy(self) -> str:
        return f"{self._root}:system:policy"

    @property
    def policy_history(self) -> str:
        return f"{self._root}:system:policy:history"

    @property
    def policy_changed(self) -> str:
        return f"{self._root}:policy:changed"
