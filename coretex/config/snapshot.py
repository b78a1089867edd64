"""The effective config as served: a version, the sha256 of its canonical JSON, the config itself.

Canonical JSON is the one spelling we hash and store: sorted keys, no spaces, UTF-8 kept, no NaN.
Two configs with equal canonical JSON have equal hashes, whatever their key order in YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coretex.model.canonical import canonical_json as canonical_json
from coretex.model.canonical import sha256_hex as sha256_hex


@dataclass(frozen=True)
class Snapshot:
    """One effective config. Treat ``config`` as read-only: every reader gets its own parsed copy."""

    version: int
    """Monotonic commit counter of the config service (shared by the system and every tenant view)."""
    sha256: str
    """sha256 of the canonical JSON of ``config``; equal hashes mean equal configs."""
    config: dict[str, Any] = field(repr=False)
    """Sections (``pools``, ``timeouts``, ``limits``, ``retention``, ``system``) after every merge."""
    tenant: str | None = None
    """The tenant whose overrides are merged in, or None for the system-wide config."""


@dataclass(frozen=True)
class HistoryEntry:
    """One commit of the effective system config: what it became, who did it, when and why."""

    version: int
    sha256: str
    author: str
    message: str
    at: float
    """Commit time, seconds since the epoch."""
    action: str
    """``set``, ``delete`` or ``rollback``."""
    scope: str
    """Scope of the document the commit changed (empty for a rollback)."""
    doc_id: str
    """Id of the document the commit changed (empty for a rollback)."""
    rollback_of: int | None
    """For a rollback, the version whose content was restored."""
    config: dict[str, Any] = field(repr=False)
    """The full effective system config of this version."""
