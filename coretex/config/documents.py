"""Config documents and the order in which they merge into an effective config. Pure: no I/O.

A document is a JSON object of sections, written by one author with a message, at one scope:

    system/base      the platform base, loaded from the files in config/ (one file per section)
    pack/<pack>      a pack's overlay; packs merge in install order
    tenant/<tenant>  a tenant's overrides, merged last, only into that tenant's effective config
    workflow/<id>    a workflow's overrides: stored and checked against the system config; not
                     merged into ``effective()`` yet

Documents are RFC 7386 merge patches, so ``null`` in an overlay deletes the key it names:

    effective()        = base -> packs (install order)
    effective(tenant)  = base -> packs (install order) -> tenant
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from coretex.config.errors import ConfigInvalidError
from coretex.config.merge import merge_layers
from coretex.config.sections import check_section_names, validate_config
from coretex.config.snapshot import canonical_json
from coretex.errors import ConfigError

SCOPES = ("system", "pack", "tenant", "workflow")
BASE_ID = "base"
"""The one config document of scope ``system``."""
POLICY_ID = "policy"
"""``system/policy`` holds policy bundles (see :mod:`coretex.config.policy_bundles`), not config."""
SCHEMA_VERSION = "1"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")


@dataclass(frozen=True)
class ConfigDocument:
    scope: str
    id: str
    doc: dict[str, Any] = field(repr=False)
    """Sections to merge (an RFC 7386 merge patch of the effective config)."""
    author: str
    message: str
    updated_at: float
    """When this content was written, seconds since the epoch."""
    schema_version: str = SCHEMA_VERSION

    @property
    def member(self) -> str:
        return f"{self.scope}:{self.id}"

    def to_fields(self) -> dict[str, str]:
        """The Redis hash of this document."""
        return {
            "scope": self.scope,
            "id": self.id,
            "doc": canonical_json(self.doc),
            "author": self.author,
            "message": self.message,
            "updated_at": repr(self.updated_at),
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> ConfigDocument:
        return cls(
            scope=raw["scope"],
            id=raw["id"],
            doc=json.loads(raw["doc"]),
            author=raw.get("author", ""),
            message=raw.get("message", ""),
            updated_at=float(raw.get("updated_at") or 0.0),
            schema_version=raw.get("schema_version", SCHEMA_VERSION),
        )


def describe(scope: str, doc_id: str) -> str:
    return f"{scope} document {doc_id!r}"


def check_address(scope: str, doc_id: str) -> None:
    """Refuse a scope/id pair that cannot hold config."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown config scope {scope!r} (known: {', '.join(SCOPES)})")
    if scope == "system" and doc_id != BASE_ID:
        hint = " (policy bundles have their own API)" if doc_id == POLICY_ID else ""
        raise ConfigError(f"scope 'system' holds only the document {BASE_ID!r}, not {doc_id!r}{hint}")
    if not _ID_RE.match(doc_id):
        raise ConfigError(f"config document id must match {_ID_RE.pattern}, got {doc_id!r}")


def check_document(scope: str, doc_id: str, doc: Any, max_bytes: int) -> dict[str, Any]:
    """Check one document on its own (shape, sections, size) and return it as plain JSON data."""
    check_address(scope, doc_id)
    context = describe(scope, doc_id)
    if not isinstance(doc, Mapping):
        raise ConfigInvalidError("(document)", "/", f"must be an object of sections, got {type(doc).__name__}", context)
    try:
        text = canonical_json(doc)
    except (TypeError, ValueError) as exc:
        raise ConfigInvalidError("(document)", "/", f"not JSON data: {exc}", context) from exc
    if len(text.encode("utf-8")) > max_bytes:
        raise ConfigInvalidError("(document)", "/", f"larger than {max_bytes} bytes of canonical JSON", context)
    plain: dict[str, Any] = json.loads(text)
    check_section_names(plain, context)
    return plain


@dataclass(frozen=True)
class DocumentSet:
    """Every config document at one version, in merge order."""

    base: ConfigDocument | None = None
    packs: tuple[ConfigDocument, ...] = ()
    """Pack overlays in install order."""
    tenants: Mapping[str, ConfigDocument] = field(default_factory=dict)
    workflows: Mapping[str, ConfigDocument] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ConfigDocument]:
        if self.base is not None:
            yield self.base
        yield from self.packs
        yield from (self.tenants[t] for t in sorted(self.tenants))
        yield from (self.workflows[w] for w in sorted(self.workflows))

    def find(self, scope: str, doc_id: str) -> ConfigDocument | None:
        return next((d for d in self if d.scope == scope and d.id == doc_id), None)

    def layers(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The patches that make the effective config of ``tenant`` (or the system), in order."""
        ordered = [self.base.doc] if self.base is not None else []
        ordered.extend(p.doc for p in self.packs)
        if tenant is not None and tenant in self.tenants:
            ordered.append(self.tenants[tenant].doc)
        return ordered

    def effective(self, tenant: str | None = None) -> dict[str, Any]:
        return merge_layers(self.layers(tenant))

    def validate(self) -> dict[str, Any]:
        """Check the system config and every override merged onto it; return the system config."""
        system = self.effective()
        validate_config(system, "effective system config")
        for tenant in sorted(self.tenants):
            validate_config(self.effective(tenant), f"effective config of tenant {tenant!r}")
        for workflow in sorted(self.workflows):
            merged = merge_layers([system, self.workflows[workflow].doc])
            validate_config(merged, f"effective config of workflow {workflow!r}")
        return system

    def with_document(self, doc: ConfigDocument) -> DocumentSet:
        """This set with ``doc`` written; a new pack goes last in install order, a known one keeps its place."""
        if doc.scope == "system":
            return replace(self, base=doc)
        if doc.scope == "pack":
            if any(p.id == doc.id for p in self.packs):
                return replace(self, packs=tuple(doc if p.id == doc.id else p for p in self.packs))
            return replace(self, packs=(*self.packs, doc))
        if doc.scope == "tenant":
            return replace(self, tenants={**self.tenants, doc.id: doc})
        return replace(self, workflows={**self.workflows, doc.id: doc})

    def without(self, scope: str, doc_id: str) -> DocumentSet:
        if scope == "system":
            return replace(self, base=None)
        if scope == "pack":
            return replace(self, packs=tuple(p for p in self.packs if p.id != doc_id))
        if scope == "tenant":
            return replace(self, tenants={k: v for k, v in self.tenants.items() if k != doc_id})
        return replace(self, workflows={k: v for k, v in self.workflows.items() if k != doc_id})

    @property
    def pack_order(self) -> list[str]:
        return [p.id for p in self.packs]

    @classmethod
    def from_documents(cls, docs: Iterable[ConfigDocument], pack_order: list[str]) -> DocumentSet:
        """Assemble a set; packs follow ``pack_order`` (a pack missing from it goes last, by id)."""
        result = cls()
        by_scope: dict[str, list[ConfigDocument]] = {}
        for doc in docs:
            by_scope.setdefault(doc.scope, []).append(doc)
        rank = {pack: i for i, pack in enumerate(pack_order)}
        packs = sorted(by_scope.get("pack", []), key=lambda d: (rank.get(d.id, len(rank)), d.id))
        for doc in [*by_scope.get("system", []), *packs, *by_scope.get("tenant", []), *by_scope.get("workflow", [])]:
            result = result.with_document(doc)
        return result

    def to_json(self) -> str:
        """Canonical JSON of every document with its metadata, for the history (exact rollback)."""
        return canonical_json({"pack_order": self.pack_order, "documents": [d.to_fields() for d in self]})

    @classmethod
    def from_json(cls, text: str) -> DocumentSet:
        data = json.loads(text)
        return cls.from_documents([ConfigDocument.from_fields(d) for d in data["documents"]], data["pack_order"])
