"""Versioned state: the store's schema version, the startup check and the migration runner.

Keys:
    <ns>:meta:schema_version   string  the store format version the data was last migrated to

Every stored record also carries its own ``schema_version`` field. A migration upgrades records
from ``version - 1`` to ``version`` in place and must be idempotent: it may be interrupted and
run again (records already at the new version are skipped). The control plane refuses to start
against a store newer than it understands, rather than misread it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import redis

from coretex.errors import StoreError
from coretex.settings import Settings
from coretex.store._redis import redis_errors

log = logging.getLogger(__name__)

STORE_SCHEMA_VERSION = 1
"""The newest store format this code reads and writes."""


class StoreTooNewError(StoreError):
    code = "store_too_new"


@dataclass(frozen=True)
class Migration:
    version: int
    """The store version this migration produces (it upgrades from ``version - 1``)."""
    description: str
    apply: Callable[[redis.Redis, str], int]
    """``apply(client, namespace)`` upgrades every record; returns how many it changed."""


MIGRATIONS: tuple[Migration, ...] = ()
"""Registered migrations, oldest first. Version 1 is the first format: nothing to migrate yet."""


def _version_key(settings: Settings) -> str:
    return f"{settings.namespace}:meta:schema_version"


def stored_version(client: redis.Redis, settings: Settings) -> int | None:
    with redis_errors("read store schema version"):
        raw = cast(str | None, client.get(_version_key(settings)))
    return int(raw) if raw is not None else None


def ensure_compatible(client: redis.Redis, settings: Settings, current: int = STORE_SCHEMA_VERSION) -> int:
    """Check the store at startup; stamp a fresh store with ``current``. Return the stored version.

    Raise :class:`StoreTooNewError` when the store was written by a newer Coretex.
    """
    with redis_errors("stamp store schema version"):
        client.set(_version_key(settings), current, nx=True)
    version = stored_version(client, settings) or current
    if version > current:
        raise StoreTooNewError(
            f"the store in namespace {settings.namespace!r} is at schema version {version}, "
            f"but this Coretex understands up to {current}: upgrade Coretex before starting it"
        )
    if version < current:
        log.warning("store at schema version %s, code at %s: run `coretex migrate`", version, current)
    return version


def migrate(
    client: redis.Redis,
    settings: Settings,
    migrations: Sequence[Migration] = MIGRATIONS,
    target: int = STORE_SCHEMA_VERSION,
) -> list[tuple[int, int]]:
    """Apply every migration above the stored version up to ``target``; return (version, changed).

    The stored version is advanced after each migration completes, so a crash mid-way resumes
    with the migration that was interrupted (which is idempotent).
    """
    current = stored_version(client, settings)
    if current is None:  # a fresh store starts at the newest format
        ensure_compatible(client, settings, target)
        return []
    if current > target:
        raise StoreTooNewError(f"store is at version {current}, newer than target {target}")
    done: list[tuple[int, int]] = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if current < migration.version <= target:
            changed = migration.apply(client, settings.namespace)
            with redis_errors(f"record store schema version {migration.version}"):
                client.set(_version_key(settings), migration.version)
            log.info("migrated store to version %s (%s): %s records", migration.version,
                     migration.description, changed)
            done.append((migration.version, changed))
            current = migration.version
    return done


def scan_records(client: redis.Redis, pattern: str) -> Iterator[str]:
    """Keys of hashes matching ``pattern`` (SCAN, so it never blocks Redis like KEYS would)."""
    for key in client.scan_iter(match=pattern, count=500, _type="hash"):
        yield cast(str, key)
