"""The effective config as a live value: read once, then followed by pub/sub and polling.

Consumers (routing, artifact retention, admission limits) read :attr:`LiveConfig.snapshot` or a
section of it on every use, so a new snapshot takes effect on the next call without restarts;
``subscribe`` lets a consumer rebuild something derived (a router) once per version. Tenant views
(base -> packs -> tenant override) are merged on demand and cached per (version, tenant).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from coretex.config.errors import ConfigNotLoadedError
from coretex.config.service import ConfigService
from coretex.config.snapshot import Snapshot
from coretex.config.watcher import ConfigWatcher
from coretex.settings import Settings

log = logging.getLogger(__name__)


class LiveConfig:
    def __init__(self, client: redis.Redis, settings: Settings, *, poll_s: float = 1.0) -> None:
        self._service = ConfigService(client, settings)
        try:
            snapshot = self._service.effective()
        except ConfigNotLoadedError:
            snapshot = self._service.load_base(settings.config_dir, message="first start: load base config files")
        self.snapshot = snapshot
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._tenants: dict[tuple[int, str], Snapshot] = {}
        self._lock = threading.Lock()
        self._watcher = ConfigWatcher(client, settings, self._switch, poll_s=poll_s, known_version=snapshot.version)
        self._watcher.start()

    def section(self, name: str, tenant: str | None = None) -> Mapping[str, Any]:
        """One section of the effective config (the tenant's view when ``tenant`` is given)."""
        snapshot = self.for_tenant(tenant) if tenant else self.snapshot
        value = snapshot.config.get(name) or {}
        return value if isinstance(value, Mapping) else {}

    def for_tenant(self, tenant: str) -> Snapshot:
        key = (self.snapshot.version, tenant)
        with self._lock:
            cached = self._tenants.get(key)
        if cached is not None and cached.version == self.snapshot.version:
            return cached
        snapshot = self._service.effective(tenant=tenant)
        with self._lock:
            self._tenants = {k: v for k, v in self._tenants.items() if k[0] == snapshot.version}
            self._tenants[(snapshot.version, tenant)] = snapshot
        return snapshot

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with every new snapshot from now on (on the watcher thread)."""
        self._listeners.append(listener)

    def close(self) -> None:
        self._watcher.stop()

    def _switch(self, snapshot: Snapshot) -> None:
        for listener in self._listeners:
            listener(snapshot)  # a listener that refuses raises: the watcher logs it, we keep the old one
        self.snapshot = snapshot
        log.info("config switched to version %s sha256 %s", snapshot.version, snapshot.sha256[:12])
