"""The config service on a real redis-server: snapshots, overlays, refusals, history, rollback,
live reload and policy bundles."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from coretex.config import (
    ConfigConflictError,
    ConfigInvalidError,
    ConfigNotLoadedError,
    ConfigService,
    ConfigServiceOptions,
    ConfigWatcher,
    PolicyBundleInvalidError,
    Snapshot,
    canonical_json,
)
from coretex.config.documents import DocumentSet
from coretex.config.snapshot import sha256_hex
from coretex.errors import ConfigError, NotFoundError
from coretex.scheduler.routing import PoolRouter
from coretex.settings import Settings, load_settings
from coretex.store import connect
from coretex.testing import RedisServer, eventually

pytestmark = pytest.mark.integration

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
GPU_PACK = {
    "pools": {
        "pools": {"gpu": {"requires": ["cuda"], "description": "GPU pool of the test pack"}},
        "topics": {"job.train": "gpu"},
    },
    "timeouts": {"topics": {"job.train": {"timeout_seconds": 600, "max_retries": 2}}},
}
BUNDLE = """\
version: 1
rules:
  - id: secops-deny-wipe
    match:
      topics: ["job.wipe.*"]
    decision: deny
    reason: wiping is reviewed by secops
"""


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = connect(settings)
    yield c
    c.close()


@pytest.fixture
def service(client: redis.Redis, settings: Settings) -> ConfigService:
    return ConfigService(client, settings)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO_CONFIG, target)
    return target


@pytest.fixture
def base(service: ConfigService, base_dir: Path) -> Snapshot:
    return service.load_base(base_dir)


def namespace_state(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """Every key of the namespace with its full content, to prove that nothing was written."""
    state: dict[str, Any] = {}
    for key in sorted(cast(list[str], list(client.scan_iter(match=f"{namespace}:*")))):
        kind = cast(str, client.type(key))
        readers: dict[str, Callable[[str], Any]] = {
            "hash": client.hgetall,
            "string": client.get,
            "list": lambda k: client.lrange(k, 0, -1),
            "set": lambda k: sorted(cast(set[str], client.smembers(k))),
            "stream": client.xrange,
        }
        assert kind in readers, f"unexpected key type {kind} for {key}"
        state[key] = readers[kind](key)
    return state


def pools_of(snapshot: Snapshot) -> dict[str, Any]:
    return cast(dict[str, Any], snapshot.config["pools"])


# -- snapshots and base files -------------------------------------------------------------------


def test_nothing_is_served_before_the_base_is_loaded(service: ConfigService) -> None:
    assert service.version() == 0
    with pytest.raises(ConfigNotLoadedError) as info:
        service.effective()
    assert info.value.code == "config_not_loaded"


def test_load_base_serves_version_1_hashed_over_canonical_json(
    service: ConfigService, base: Snapshot, client: redis.Redis, settings: Settings
) -> None:
    assert base.version == 1
    assert set(base.config) == {"pools", "timeouts", "limits", "retention", "system"}
    assert pools_of(base)["topics"] == {"job.echo": "echo"}
    assert base.sha256 == sha256_hex(canonical_json(base.config))
    assert service.effective() == base
    doc = service.get("system", "base")
    assert (doc.author, doc.message, doc.schema_version) == ("system", "load base config files", "1")
    stored = cast(dict[str, str], client.hgetall(f"{settings.namespace}:cfg:system:base"))
    assert stored["schema_version"] == "1" and stored["author"] == "system"
    # The effective pools section is exactly what the scheduler's router takes.
    assert PoolRouter.from_config(pools_of(base)).route("job.echo") == "echo"


def test_load_base_is_idempotent_and_picks_up_file_changes(service: ConfigService, base: Snapshot,
                                                           base_dir: Path) -> None:
    again = service.load_base(base_dir, message="restart")
    assert (again.version, again.sha256) == (base.version, base.sha256)
    assert len(service.history()) == 1

    (base_dir / "limits.yaml").write_text("max_concurrent_jobs: 8\nmax_input_bytes: 65536\n")
    changed = service.load_base(base_dir, author="ops", message="add limits")
    assert changed.version == 2
    assert changed.config["limits"] == {"max_concurrent_jobs": 8, "max_input_bytes": 65536}
    assert changed.sha256 != base.sha256


def test_a_bad_base_file_is_refused_and_the_old_base_keeps_serving(
    service: ConfigService, base: Snapshot, base_dir: Path, client: redis.Redis, settings: Settings
) -> None:
    before = namespace_state(client, settings.namespace)
    (base_dir / "timeouts.yaml").write_text("topics:\n  job.echo: {timeout_seconds: soon}\n")
    with pytest.raises(ConfigInvalidError) as info:
        service.load_base(base_dir)
    assert (info.value.section, info.value.path) == ("timeouts", "/topics/job.echo/timeout_seconds")
    assert namespace_state(client, settings.namespace) == before
    assert service.effective() == base


def test_every_key_written_is_under_the_namespace(
    service: ConfigService, base_dir: Path, client: redis.Redis, settings: Settings
) -> None:
    before = set(cast(list[str], client.keys("*")))
    service.load_base(base_dir)
    service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    service.put_policy_bundle("secops/workflows", BUNDLE, "secops", "first bundle")
    added = set(cast(list[str], client.keys("*"))) - before
    assert added and all(key.startswith(f"{settings.namespace}:cfg:") for key in added), sorted(added)


# -- overlays -----------------------------------------------------------------------------------


def test_a_pack_overlay_adds_a_pool_and_topic_as_a_new_version(service: ConfigService, base: Snapshot) -> None:
    snapshot = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu 1.0")
    assert snapshot.version == base.version + 1
    assert snapshot.sha256 != base.sha256
    assert service.effective() == snapshot
    assert set(pools_of(snapshot)["pools"]) == {"echo", "gpu"}
    assert pools_of(snapshot)["topics"] == {"job.echo": "echo", "job.train": "gpu"}
    assert snapshot.config["timeouts"]["topics"]["job.train"] == {"timeout_seconds": 600, "max_retries": 2}
    assert PoolRouter.from_config(pools_of(snapshot)).route("job.train", ["cuda"]) == "gpu"
    stored = service.get("pack", "gpu")
    assert (stored.doc, stored.author, stored.message) == (GPU_PACK, "installer", "install gpu 1.0")
    # Writing the same content again commits nothing.
    assert service.set("pack", "gpu", GPU_PACK, "installer", "reinstall").version == snapshot.version


def test_packs_merge_in_install_order_and_uninstall_restores(service: ConfigService, base: Snapshot) -> None:
    service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    reroute = {"pools": {"topics": {"job.echo": "gpu"}}}
    service.set("pack", "reroute", reroute, "installer", "install reroute")
    assert pools_of(service.effective())["topics"]["job.echo"] == "gpu"
    # Re-installing the earlier pack keeps its place: the later pack still wins.
    service.set("pack", "gpu", {**GPU_PACK, "system": {"gpu_pack": 2}}, "installer", "upgrade gpu")
    assert service.documents().pack_order == ["gpu", "reroute"]
    assert pools_of(service.effective())["topics"]["job.echo"] == "gpu"
    uninstalled = service.delete("pack", "reroute", "installer", "uninstall reroute")
    assert pools_of(uninstalled)["topics"]["job.echo"] == "echo"
    assert service.documents().pack_order == ["gpu"]
    with pytest.raises(NotFoundError):
        service.get("pack", "reroute")
    with pytest.raises(NotFoundError):
        service.delete("pack", "reroute", "installer", "again")


@pytest.mark.parametrize(
    ("overlay", "section", "path"),
    [
        ({"pools": {"topics": {"job.train": "gpu"}}}, "pools", "/topics/job.train"),
        ({"timeouts": {"topics": {"job.echo": {"timeout_seconds": "30"}}}}, "timeouts",
         "/topics/job.echo/timeout_seconds"),
        ({"timeouts": {"topics": {"job.echo": {"max_retries": -1}}}}, "timeouts", "/topics/job.echo/max_retries"),
        ({"routing": {"job.echo": "echo"}}, "routing", "/"),
    ],
)
def test_an_invalid_overlay_is_refused_and_nothing_changes(
    service: ConfigService, base: Snapshot, client: redis.Redis, settings: Settings,
    overlay: dict[str, Any], section: str, path: str,
) -> None:
    before = namespace_state(client, settings.namespace)
    with pytest.raises(ConfigInvalidError) as info:
        service.set("pack", "bad", overlay, "installer", "install bad")
    assert (info.value.code, info.value.section, info.value.path) == ("config_invalid", section, path)
    assert namespace_state(client, settings.namespace) == before
    assert service.effective() == base
    with pytest.raises(NotFoundError):
        service.get("pack", "bad")


def test_an_overlay_null_deletes_keys_and_sections(service: ConfigService, base: Snapshot) -> None:
    trimmed = service.set("pack", "trim", {"pools": {"topics": {"job.echo": None}}, "system": None}, "ops", "trim")
    assert pools_of(trimmed)["topics"] == {}
    assert "system" not in trimmed.config
    assert service.get("pack", "trim").doc["system"] is None, "the stored overlay keeps its nulls"


@pytest.mark.parametrize(
    ("scope", "doc_id", "author"),
    [("global", "x", "ops"), ("system", "extra", "ops"), ("system", "policy", "ops"), ("tenant", "a:b", "ops"),
     ("tenant", "t1", " ")],
)
def test_bad_address_or_author_is_refused(service: ConfigService, base: Snapshot, client: redis.Redis,
                                          settings: Settings, scope: str, doc_id: str, author: str) -> None:
    before = namespace_state(client, settings.namespace)
    with pytest.raises(ConfigError):
        service.set(scope, doc_id, {"system": {}}, author, "bad")
    assert namespace_state(client, settings.namespace) == before


def test_tenant_overrides_show_only_in_that_tenants_view(service: ConfigService, base: Snapshot) -> None:
    service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    override = {
        "limits": {"max_concurrent_jobs": 2},
        "timeouts": {"topics": {"job.train": {"timeout_seconds": 60}}},
    }
    committed = service.set("tenant", "acme", override, "ops", "acme is on the small plan")
    system, acme, other = service.effective(), service.effective("acme"), service.effective("globex")
    assert system.version == acme.version == other.version == committed.version
    assert acme.tenant == "acme" and system.tenant is None
    assert acme.config["limits"] == {"max_concurrent_jobs": 2, "max_input_bytes": 262144}  # override merged over base
    assert acme.config["timeouts"]["topics"]["job.train"] == {"timeout_seconds": 60, "max_retries": 2}
    assert system.config["limits"] == {"max_input_bytes": 262144}  # config/limits.yaml
    assert system.config["timeouts"]["topics"]["job.train"]["timeout_seconds"] == 600
    assert acme.sha256 == sha256_hex(canonical_json(acme.config)) != system.sha256
    assert (other.sha256, other.config) == (system.sha256, system.config)


def test_a_change_that_breaks_a_tenants_merge_is_refused(
    service: ConfigService, base: Snapshot, client: redis.Redis, settings: Settings
) -> None:
    service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    service.set("tenant", "acme", {"pools": {"topics": {"job.echo": "gpu"}}}, "ops", "acme runs echo on gpu")
    before = namespace_state(client, settings.namespace)
    with pytest.raises(ConfigInvalidError) as info:
        service.delete("pack", "gpu", "installer", "uninstall gpu")
    assert "tenant 'acme'" in str(info.value)
    assert (info.value.section, info.value.path) == ("pools", "/topics/job.echo")
    assert namespace_state(client, settings.namespace) == before


def test_workflow_overrides_are_checked_against_the_system_config(
    service: ConfigService, base: Snapshot, client: redis.Redis, settings: Settings
) -> None:
    before = namespace_state(client, settings.namespace)
    with pytest.raises(ConfigInvalidError) as info:
        service.set("workflow", "nightly", {"pools": {"topics": {"job.nightly": "gpu"}}}, "ops", "no gpu pool")
    assert "workflow 'nightly'" in str(info.value)
    assert namespace_state(client, settings.namespace) == before
    committed = service.set("workflow", "nightly", {"timeouts": {"topics": {"job.echo": {"max_retries": 5}}}},
                            "ops", "nightly retries more")
    assert committed.version == base.version + 1
    assert committed.sha256 == base.sha256, "workflow overrides are not merged into the system config"
    assert service.get("workflow", "nightly").doc["timeouts"]["topics"]["job.echo"] == {"max_retries": 5}


# -- history and rollback -----------------------------------------------------------------------


def test_history_lists_who_when_why_newest_first(service: ConfigService, base_dir: Path) -> None:
    started = time.time()
    first = service.load_base(base_dir, author="boot", message="initial")
    second = service.set("pack", "gpu", GPU_PACK, "alice", "install gpu")
    third = service.set("tenant", "acme", {"limits": {"max_concurrent_jobs": 1}}, "bob", "throttle acme")
    history = service.history()
    assert [(h.version, h.author, h.message, h.action, h.scope, h.doc_id) for h in history] == [
        (3, "bob", "throttle acme", "set", "tenant", "acme"),
        (2, "alice", "install gpu", "set", "pack", "gpu"),
        (1, "boot", "initial", "set", "system", "base"),
    ]
    assert [h.sha256 for h in history] == [third.sha256, second.sha256, first.sha256]
    assert [h.config for h in history] == [third.config, second.config, first.config]
    assert all(started <= h.at <= time.time() for h in history)
    assert [h.version for h in service.history(limit=1)] == [3]


def test_rollback_restores_the_exact_hash_as_a_new_version(service: ConfigService, base: Snapshot) -> None:
    with_pack = service.set("pack", "gpu", GPU_PACK, "alice", "install gpu")
    service.set("pack", "reroute", {"pools": {"topics": {"job.echo": "gpu"}}}, "alice", "reroute echo")
    service.set("tenant", "acme", {"limits": {"max_concurrent_jobs": 1}}, "bob", "throttle acme")

    restored = service.rollback(with_pack.version, "carol", "undo reroute and acme")
    assert restored.version == 5
    assert restored.sha256 == with_pack.sha256
    assert restored.config == with_pack.config
    assert service.effective() == restored
    assert service.documents().pack_order == ["gpu"]
    with pytest.raises(NotFoundError):
        service.get("tenant", "acme")
    assert service.get("pack", "gpu").message == "install gpu", "documents come back with their own metadata"
    history = service.history()
    assert [h.version for h in history] == [5, 4, 3, 2, 1], "history is append-only"
    assert (history[0].action, history[0].rollback_of, history[0].author) == ("rollback", 2, "carol")

    # Back to the very first version, then forward again: documents stay consistent.
    assert service.rollback(base.version, "carol", "back to base").sha256 == base.sha256
    assert service.documents().pack_order == []
    again = service.set("pack", "gpu", GPU_PACK, "alice", "reinstall gpu")
    assert again.sha256 == with_pack.sha256 and again.version == 7


def test_rollback_refuses_versions_outside_the_bounded_history(
    client: redis.Redis, settings: Settings, base_dir: Path
) -> None:
    service = ConfigService(client, settings, ConfigServiceOptions(history_maxlen=3))
    service.load_base(base_dir)
    for size in (1, 2, 3, 4):
        service.set("tenant", "acme", {"limits": {"max_concurrent_jobs": size}}, "ops", f"size {size}")
    assert [h.version for h in service.history(limit=10)] == [5, 4, 3]
    for version in (1, 6):
        with pytest.raises(NotFoundError, match=f"config version {version} is not in the history"):
            service.rollback(version, "ops", "too far")
    assert service.rollback(3, "ops", "back to 3").version == 6


def test_history_documents_rebuild_each_recorded_config(service: ConfigService, base: Snapshot,
                                                        client: redis.Redis, settings: Settings) -> None:
    service.set("pack", "gpu", GPU_PACK, "alice", "install gpu")
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(f"{settings.namespace}:cfg:history"))
    for _, fields in entries:
        rebuilt = DocumentSet.from_json(fields["documents"]).effective()
        assert sha256_hex(canonical_json(rebuilt)) == fields["sha256"]


# -- concurrent writers -------------------------------------------------------------------------


class RacingService(ConfigService):
    """A service whose rival commits right after each of its first ``races`` reads."""

    def __init__(self, client: redis.Redis, settings: Settings, attempts: int, races: int) -> None:
        super().__init__(client, settings, ConfigServiceOptions(commit_attempts=attempts))
        self._rival = ConfigService(client, settings)
        self._races = races

    def _read(self) -> tuple[int, DocumentSet]:
        state = super()._read()
        if self._races > 0:
            self._races -= 1
            rival = f"rival{self._races}"
            self._rival.set("pack", rival, {"system": {rival: True}}, "rival", "race")
        return state


def test_a_write_that_loses_a_race_is_recomputed(client: redis.Redis, settings: Settings, base: Snapshot) -> None:
    racing = RacingService(client, settings, attempts=3, races=1)
    snapshot = racing.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    assert snapshot.version == base.version + 2
    # Recomputed on top of the rival's commit: both packs are in the config and the install order.
    assert snapshot.config["system"] == {"rival0": True}
    assert set(pools_of(snapshot)["pools"]) == {"echo", "gpu"}
    assert racing.documents().pack_order == ["rival0", "gpu"]
    assert [h.author for h in racing.history()] == ["installer", "rival", "system"]


def test_a_write_that_keeps_losing_gives_up_without_writing(
    client: redis.Redis, settings: Settings, base: Snapshot
) -> None:
    racing = RacingService(client, settings, attempts=2, races=2)
    with pytest.raises(ConfigConflictError) as info:
        racing.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    assert info.value.code == "config_conflict"
    with pytest.raises(NotFoundError):
        racing.get("pack", "gpu")
    assert racing.version() == base.version + 2


# -- live reload --------------------------------------------------------------------------------


@pytest.fixture
def watchers() -> Iterator[list[ConfigWatcher]]:
    started: list[ConfigWatcher] = []
    yield started
    for watcher in started:
        watcher.stop()
    assert not any(w.is_alive() for w in started), "a watcher thread outlived its test"


def subscribers(client: redis.Redis, settings: Settings) -> int:
    counts = cast(list[tuple[str, int]], client.pubsub_numsub(f"{settings.namespace}:cfg:changed"))
    return int(counts[0][1])


def test_watcher_sees_a_change_through_pubsub(
    client: redis.Redis, settings: Settings, service: ConfigService, base: Snapshot, watchers: list[ConfigWatcher]
) -> None:
    seen: list[Snapshot] = []
    watcher = ConfigWatcher(client, settings, seen.append, poll_s=60.0)  # polling alone would take a minute
    watchers.append(watcher.start())
    eventually(lambda: subscribers(client, settings) == 1, timeout=2, message="watcher subscribed")
    committed = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    eventually(lambda: seen and seen[-1] == committed, timeout=2, message="watcher saw the new version")
    assert [s.version for s in seen] == [committed.version]
    assert watcher.version == committed.version


def test_watcher_sees_a_change_by_polling_without_pubsub(
    client: redis.Redis, settings: Settings, service: ConfigService, base: Snapshot, watchers: list[ConfigWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="coretex.config.watcher")
    seen: list[Snapshot] = []
    watchers.append(ConfigWatcher(client, settings, seen.append, poll_s=0.2, use_pubsub=False).start())
    committed = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    eventually(lambda: seen and seen[-1].version == committed.version, timeout=2, message="polled change")
    assert subscribers(client, settings) == 0
    assert seen[-1].sha256 == committed.sha256
    assert f"config switched to version {committed.version} sha256 {committed.sha256}" in caplog.text


def test_watcher_with_a_stale_known_version_catches_up_at_start(
    client: redis.Redis, settings: Settings, service: ConfigService, base: Snapshot, watchers: list[ConfigWatcher]
) -> None:
    current = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    seen: list[Snapshot] = []
    watchers.append(ConfigWatcher(client, settings, seen.append, poll_s=60.0, known_version=base.version).start())
    eventually(lambda: seen and seen[-1] == current, timeout=2, message="catch-up on start")


def test_watcher_keeps_going_when_on_change_raises(
    client: redis.Redis, settings: Settings, service: ConfigService, base: Snapshot, watchers: list[ConfigWatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    def on_change(snapshot: Snapshot) -> None:
        seen.append(snapshot.version)
        if len(seen) == 1:
            raise RuntimeError("router rebuild failed")

    watchers.append(ConfigWatcher(client, settings, on_change, poll_s=0.2).start())
    first = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
    eventually(lambda: seen == [first.version], timeout=2, message="first change")
    second = service.set("tenant", "acme", {"limits": {"max_concurrent_jobs": 1}}, "ops", "throttle")
    eventually(lambda: seen == [first.version, second.version], timeout=2, message="second change")
    assert "on_change failed for version" in caplog.text


def test_watcher_stop_joins_its_thread(client: redis.Redis, settings: Settings, base: Snapshot) -> None:
    watcher = ConfigWatcher(client, settings, lambda _s: None, poll_s=60.0).start()
    name = f"coretex-config-watcher-{settings.namespace}"
    assert watcher.is_alive() and any(t.name == name for t in threading.enumerate())
    watcher.stop()
    assert not watcher.is_alive()
    assert not any(t.name == name for t in threading.enumerate())
    eventually(lambda: subscribers(client, settings) == 0, timeout=2, message="pub/sub connection closed")
    with pytest.raises(RuntimeError):
        watcher.start()


def test_watcher_survives_a_redis_restart(base_dir: Path, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORETEX_")}
        own = load_settings({**env, "CORETEX_REDIS_URL": server.url, "CORETEX_NAMESPACE": namespace})
        own_client = connect(own)
        service = ConfigService(own_client, own)
        seen: list[Snapshot] = []
        watcher = ConfigWatcher(own_client, own, seen.append, poll_s=0.2).start()
        try:
            service.load_base(base_dir)
            second = service.set("pack", "gpu", GPU_PACK, "installer", "install gpu")
            eventually(lambda: seen and seen[-1].version == second.version, timeout=2, message="before restart")
            server.stop()
            eventually(lambda: "config watcher:" in caplog.text, timeout=5, message="the error was logged")
            server.start_on(server.port)
            # The restarted server lost its data: version 1 again, which is a change for the watcher.
            reloaded = service.load_base(base_dir)
            eventually(lambda: seen[-1] == reloaded, timeout=10, message="reload after the restart")
            assert watcher.is_alive()
        finally:
            watcher.stop()
            own_client.close()
        assert not watcher.is_alive()


# -- policy bundles -----------------------------------------------------------------------------


def test_policy_bundles_are_stored_verbatim_with_metadata(service: ConfigService) -> None:
    first = service.put_policy_bundle("secops/workflows", BUNDLE, "alice", "first cut")
    assert (first.bundle_id, first.content, first.author, first.message) == (
        "secops/workflows", BUNDLE, "alice", "first cut")
    assert (first.enabled, first.revision, first.sha256) == (True, 1, sha256_hex(BUNDLE))
    assert first.created_at == first.updated_at
    assert service.get_policy_bundle("secops/workflows") == first

    edited = BUNDLE.replace("secops", "security")
    second = service.put_policy_bundle("secops/workflows", edited, "bob", "rename team")
    assert (second.content, second.revision, second.author, second.created_at) == (edited, 2, "bob", first.created_at)
    assert second.updated_at >= first.updated_at
    assert service.version() == 0, "policy bundles are not part of the effective config"


def test_policy_bundles_list_enable_and_history(service: ConfigService) -> None:
    service.put_policy_bundle("secops/workflows", BUNDLE, "alice", "add")
    service.put_policy_bundle("base/extra", "version: 1\n", "alice", "add extra", enabled=False)
    assert [b.bundle_id for b in service.list_policy_bundles()] == ["base/extra", "secops/workflows"]
    assert [b.bundle_id for b in service.list_policy_bundles(enabled_only=True)] == ["secops/workflows"]

    disabled = service.set_policy_bundle_enabled("secops/workflows", False, "carol", "incident 42")
    assert (disabled.enabled, disabled.revision, disabled.content) == (False, 2, BUNDLE)
    assert service.list_policy_bundles(enabled_only=True) == []
    service.set_policy_bundle_enabled("base/extra", True, "carol", "turn on")
    # A put without enabled keeps the flag it had.
    assert service.put_policy_bundle("secops/workflows", BUNDLE, "alice", "same again").enabled is False

    history = service.policy_bundle_history("secops/workflows")
    assert [(c.action, c.revision, c.author, c.enabled) for c in history] == [
        ("put", 3, "alice", False),
        ("disable", 2, "carol", False),
        ("put", 1, "alice", True),
    ]
    assert history[0].content == BUNDLE and history[1].content == ""
    assert [c.bundle_id for c in service.policy_bundle_history(limit=2)] == ["secops/workflows", "base/extra"]


@pytest.mark.parametrize(
    ("bundle_id", "content", "error"),
    [
        ("secops/workflows", "rules: [unclosed", PolicyBundleInvalidError),
        ("secops/workflows", "version: 1\nrules:\n  - id: x\n    decision: maybe\n", PolicyBundleInvalidError),
        ("secops/workflows", "version: 1\nextra: true\n", PolicyBundleInvalidError),
        ("../etc", "version: 1\n", ConfigError),
        ("secops:x", "version: 1\n", ConfigError),
    ],
)
def test_invalid_policy_bundles_are_refused_without_trace(
    service: ConfigService, client: redis.Redis, settings: Settings, bundle_id: str, content: str,
    error: type[Exception],
) -> None:
    before = namespace_state(client, settings.namespace)
    with pytest.raises(error):
        service.put_policy_bundle(bundle_id, content, "alice", "bad")
    assert namespace_state(client, settings.namespace) == before


def test_unknown_policy_bundles_are_not_found(service: ConfigService, client: redis.Redis,
                                              settings: Settings) -> None:
    with pytest.raises(NotFoundError):
        service.get_policy_bundle("nope/missing")
    with pytest.raises(NotFoundError):
        service.set_policy_bundle_enabled("nope/missing", True, "alice", "enable")
    assert namespace_state(client, settings.namespace) == {}
