"""Routing that follows the effective config: base pools.yaml + pack overlays, reloaded live.

The table reads ``pools`` from the config service's effective snapshot and swaps in a new
:class:`PoolRouter` whenever the snapshot version changes (pub/sub, with polling as the safety
net). A snapshot whose pools do not build a router is refused by the config service before it is
committed, so a swap never installs a broken table; if one still fails, the old table keeps
serving and the failure is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from coretex.config import ConfigNotLoadedError, ConfigService, ConfigWatcher, Snapshot
from coretex.errors import ConfigError
from coretex.scheduler.routing import Pool, PoolRouter
from coretex.settings import Settings

log = logging.getLogger(__name__)


class RoutingTable:
    def __init__(self, client: redis.Redis, settings: Settings, *, poll_s: float = 1.0) -> None:
        config = ConfigService(client, settings)
        try:
            snapshot = config.effective()
        except ConfigNotLoadedError:
            snapshot = config.load_base(settings.config_dir, message="first start: load base config files")
        self._router = _router_of(snapshot)
        self.version = snapshot.version
        self._watcher = ConfigWatcher(client, settings, self._switch, poll_s=poll_s, known_version=snapshot.version)
        self._watcher.start()

    @property
    def pools(self) -> dict[str, Pool]:
        return self._router.pools

    def route(self, topic: str, requires: Iterable[str] = ()) -> str:
        return self._router.route(topic, requires)

    def close(self) -> None:
        self._watcher.stop()

    def _switch(self, snapshot: Snapshot) -> None:
        try:
            router = _router_of(snapshot)
        except ConfigError:
            log.exception("config version %s has unusable pools; routing stays on version %s",
                          snapshot.version, self.version)
            return
        self._router, self.version = router, snapshot.version  # one reference swap: readers never see a mix
        log.info("routing switched to config version %s sha256 %s", snapshot.version, snapshot.sha256[:12])


def _router_of(snapshot: Snapshot) -> PoolRouter:
    return PoolRouter.from_config(snapshot.config.get("pools", {"pools": {}, "topics": {}}),
                                  f"config version {snapshot.version}")
