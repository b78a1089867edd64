"""Routing that follows the effective config: base pools.yaml + pack overlays, reloaded live.

The table builds a :class:`PoolRouter` from the ``pools`` section of the live config and swaps in
a new one whenever the snapshot version changes. A snapshot whose pools do not build a router is
refused by the config service before it is committed, so a swap never installs a broken table; if
one still fails, the old table keeps serving and the failure is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from coretex.config import Snapshot
from coretex.config.live import LiveConfig
from coretex.errors import ConfigError
from coretex.policy.constraints import Constraints
from coretex.scheduler.routing import Pool, PoolRouter

log = logging.getLogger(__name__)


class RoutingTable:
    def __init__(self, live: LiveConfig) -> None:
        self._router = _router_of(live.snapshot)
        self.version = live.snapshot.version
        live.subscribe(self._switch)

    @property
    def pools(self) -> dict[str, Pool]:
        return self._router.pools

    def route(self, topic: str, requires: Iterable[str] = (), preferred: str | None = None,
              constraints: Constraints | None = None) -> str:
        return self._router.route(topic, requires, preferred, constraints)

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
