"""Versioned state: the startup check and the idempotent migration runner, on real Redis."""

from __future__ import annotations

from typing import cast

import pytest
import redis

from coretex.settings import Settings
from coretex.store import connect
from coretex.store.migrations import (
    STORE_SCHEMA_VERSION,
    Migration,
    StoreTooNewError,
    ensure_compatible,
    migrate,
    scan_records,
    stored_version,
)

pytestmark = pytest.mark.integration


def _add_priority_field(client: redis.Redis, namespace: str) -> int:
    """A sample v2 migration: every job record gains ``priority`` and moves to schema_version 2."""
    changed = 0
    for key in scan_records(client, f"{namespace}:job:*"):
        if cast(str | None, client.hget(key, "schema_version")) == "2":
            continue
        client.hset(key, mapping={"priority": "BATCH", "schema_version": "2"})
        changed += 1
    return changed


def test_fresh_store_is_stamped_with_the_current_version(settings: Settings) -> None:
    client = connect(settings)
    assert stored_version(client, settings) is None
    assert ensure_compatible(client, settings) == STORE_SCHEMA_VERSION
    assert stored_version(client, settings) == STORE_SCHEMA_VERSION


def test_store_newer_than_the_code_refuses_to_start(settings: Settings) -> None:
    client = connect(settings)
    client.set(f"{settings.namespace}:meta:schema_version", STORE_SCHEMA_VERSION + 1)
    with pytest.raises(StoreTooNewError, match="upgrade Coretex"):
        ensure_compatible(client, settings)


def test_migration_upgrades_records_in_place_and_is_idempotent(settings: Settings) -> None:
    client = connect(settings)
    ensure_compatible(client, settings, current=1)
    for n in range(5):
        client.hset(f"{settings.namespace}:job:j{n}", mapping={"state": "PENDING", "schema_version": "1"})
    v2 = Migration(2, "add priority", _add_priority_field)

    first = migrate(client, settings, [v2], target=2)
    second = migrate(client, settings, [v2], target=2)

    assert first == [(2, 5)]
    assert second == []  # already at 2: nothing runs
    assert stored_version(client, settings) == 2
    assert client.hget(f"{settings.namespace}:job:j3", "priority") == "BATCH"
    # Re-running the migration itself (as after a crash before the version was recorded) changes nothing.
    assert _add_priority_field(client, settings.namespace) == 0


def test_migrate_on_fresh_store_stamps_target(settings: Settings) -> None:
    client = connect(settings)
    assert migrate(client, settings) == []
    assert stored_version(client, settings) == STORE_SCHEMA_VERSION


def test_control_worker_refuses_to_start_on_a_newer_store(settings: Settings) -> None:
    import os
    import subprocess
    import sys

    connect(settings).set(f"{settings.namespace}:meta:schema_version", STORE_SCHEMA_VERSION + 5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
    env.update({"CORETEX_REDIS_URL": settings.redis_url, "CORETEX_NAMESPACE": settings.namespace})

    proc = subprocess.run([sys.executable, "-m", "coretex", "control"], env=env, capture_output=True,
                          text=True, timeout=60)

    assert proc.returncode != 0
    assert "upgrade Coretex" in proc.stderr
