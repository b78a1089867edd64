"""Policy snapshots: what the kernel serves, the version it reports, and its last-known-good copy.

A snapshot is ``(version, sha256, per-source hashes)`` over a compiled :class:`PolicySet`.

- ``sha256`` hashes the canonical merged policy (:func:`~coretex.kernel.pipeline.merged_sha256`):
  the decisions, not file names or order. The CAP ``policy_snapshot`` of every decision stays the
  content id ``v1:<first 12 hex>`` (:attr:`PolicySet.snapshot_id`), so approvals bound to it stay
  valid across restarts and kernels exactly while the decisions are the same.
- ``version`` is shared by every kernel of the namespace (``lua/policy_version.lua``): the kernel
  that first installs a new merged policy increments it, every other kernel installing the same
  policy reads it, so a fleet reports one version per policy. Derived from the installed policy
  rather than from config-service revisions, because file and URL sources change it too. Without
  Redis a kernel counts on its own; versions never go down within one process.
  ``ListSnapshots`` answers ``v<version>:<first 12 hex of sha256>``.

Last-known-good: after every install the sources are saved **verbatim** (signed bytes, base64,
and their signature text) with the version and time; at start, when the sources fail, they are
re-verified and re-tested exactly like fresh sources before being served (OPA #3472: a rewritten
copy would no longer match its signature).

Keys (Redis, namespace ``<ns>``)::

    <ns>:kernel:policy:version   hash    {version, sha256} of the latest snapshot any kernel installed
    <ns>:kernel:lkg              string  JSON last-known-good (below); no TTL: it must outlive outages

LKG JSON: ``{"format": 1, "version", "sha256", "saved_at", "sources": [{name, kind, body (base64),
sha256, signature}]}``, also written to ``CORETEX_POLICY_LKG_PATH`` when set (mode 0600).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from coretex.errors import StoreError
from coretex.kernel.sources import PolicySource, PolicySourceError
from coretex.policy import PolicySet
from coretex.store._redis import redis_errors

log = logging.getLogger("coretex.kernel")
LKG_FORMAT = 1


@dataclass(frozen=True)
class PolicySnapshot:
    version: int
    sha256: str
    """sha256 of the canonical merged policy."""
    policy: PolicySet
    sources: tuple[PolicySource, ...]
    loaded_at: float

    @property
    def snapshot_id(self) -> str:
        """``v<version>:<first 12 hex of sha256>`` (what ListSnapshots answers)."""
        return f"v{self.version}:{self.sha256[:12]}"

    @property
    def source_hashes(self) -> Mapping[str, str]:
        return {source.name: source.sha256 for source in self.sources}


@dataclass(frozen=True)
class SavedSnapshot:
    """A last-known-good as read back: still to be verified before it may serve."""

    origin: str
    version: int
    saved_at: float
    sources: tuple[PolicySource, ...]


class SnapshotVersions:
    """Hands out snapshot versions, shared through Redis when it answers (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._r = client
        self._key = f"{namespace}:kernel:policy:version"
        source = resources.files("coretex.kernel").joinpath("lua", "policy_version.lua").read_text()
        self._script = client.register_script(source)
        self._sha = ""
        self._version = 0

    def version_for(self, sha256: str) -> int:
        if sha256 == self._sha:
            return self._version
        try:
            with redis_errors("allocate policy snapshot version"):
                shared = int(self._script(keys=[self._key], args=[sha256]))
        except StoreError as exc:
            log.warning("policy snapshot version counted locally: %s", exc)
            shared = 0
        self._sha, self._version = sha256, shared if shared > self._version else self._version + 1
        return self._version


class LastKnownGood:
    """Saves and reads back the verbatim sources of the last snapshot that passed every stage."""

    def __init__(self, client: redis.Redis, namespace: str, path: Path | None) -> None:
        self._r = client
        self.key = f"{namespace}:kernel:lkg"
        self.path = path

    def save(self, snapshot: PolicySnapshot) -> None:
        """Best effort: a failure is logged, never raised (the snapshot is already serving)."""
        record = json.dumps({
            "format": LKG_FORMAT,
            "version": snapshot.version,
            "sha256": snapshot.sha256,
            "saved_at": snapshot.loaded_at,
            "sources": [source.to_record() for source in snapshot.sources],
        }, sort_keys=True)
        try:
            with redis_errors("save last-known-good policy"):
                self._r.set(self.key, record)
        except StoreError as exc:
            log.warning("last-known-good policy not saved to Redis: %s", exc)
        if self.path is not None:
            try:
                _write_private(self.path, record)
            except OSError as exc:
                log.warning("last-known-good policy not saved to %s: %s", self.path, exc)

    def load(self) -> tuple[list[SavedSnapshot], list[str]]:
        """Saved snapshots (local file first, then Redis) and why others could not be read."""
        found: list[SavedSnapshot] = []
        problems: list[str] = []
        for origin, reader in (("file", self._read_file), ("redis", self._read_redis)):
            try:
                raw = reader()
                if raw is not None:
                    found.append(_decode(f"{origin} {self._where(origin)}", raw))
            except (OSError, StoreError, PolicySourceError) as exc:
                problems.append(f"last-known-good from {origin}: {exc}")
        return found, problems

    def _where(self, origin: str) -> str:
        return str(self.path) if origin == "file" else self.key

    def _read_file(self) -> str | None:
        if self.path is None or not self.path.exists():
            return None
        return self.path.read_text(encoding="utf-8")

    def _read_redis(self) -> str | None:
        with redis_errors("read last-known-good policy"):
            raw = self._r.get(self.key)
        return None if raw is None else str(raw)


def _decode(origin: str, raw: str) -> SavedSnapshot:
    try:
        data: Any = json.loads(raw)
        if data.get("format") != LKG_FORMAT:
            raise PolicySourceError(f"unknown last-known-good format {data.get('format')!r}")
        sources = tuple(PolicySource.from_record(item) for item in data["sources"])
        return SavedSnapshot(origin, int(data["version"]), float(data["saved_at"]), sources)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PolicySourceError(f"malformed last-known-good: {exc!r}") from exc


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically (temp file + rename in the same folder); mkstemp makes it 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
