"""Live reload: call back with the new effective config whenever its version changes.

The watcher listens on ``<ns>:cfg:changed`` for a prompt reaction and also polls the version
every ``poll_s``, because pub/sub drops whatever is published while the connection is down. It
compares versions, never trusts message payloads, and keeps going through Redis errors (logged,
retried after a short back-off). ``on_change`` runs on the watcher thread, once per observed
version; an exception in it is logged and that version is not offered again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from redis.client import PubSub

from coretex.config.errors import ConfigNotLoadedError
from coretex.config.keys import ConfigKeys
from coretex.config.service import ConfigService
from coretex.config.snapshot import Snapshot
from coretex.errors import StoreError
from coretex.settings import Settings
from coretex.store._redis import redis_errors

logger = logging.getLogger(__name__)
_SLICE_S = 0.2
"""Longest blocking wait, so stop() is honoured quickly."""
_MAX_BACKOFF_S = 5.0


class ConfigWatcher:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        on_change: Callable[[Snapshot], None],
        poll_s: float = 1.0,
        *,
        use_pubsub: bool = True,
        known_version: int | None = None,
    ) -> None:
        """``known_version``: the version the caller already applied; None takes the current one at start()."""
        if poll_s <= 0:
            raise ValueError("poll_s must be positive")
        self._r = client
        self._service = ConfigService(client, settings)
        self._channel = ConfigKeys(settings.namespace).changed
        self._on_change = on_change
        self._poll_s = poll_s
        self._use_pubsub = use_pubsub
        self._known = known_version
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = f"coretex-config-watcher-{settings.namespace}"

    @property
    def version(self) -> int | None:
        """The last version handed to ``on_change`` (or the baseline taken at start)."""
        return self._known

    def start(self) -> ConfigWatcher:
        if self._thread is not None:
            raise RuntimeError("ConfigWatcher already started")
        if self._known is None:
            self._known = self._service.version()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to finish and join it (it wakes at least every 0.2 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("config watcher thread did not stop within %.1fs", timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = _SLICE_S
        pubsub: PubSub | None = None
        while not self._stop.is_set():
            try:
                if pubsub is None and self._use_pubsub:
                    pubsub = self._subscribe()
                self._check()
                self._wait(pubsub)
                backoff = _SLICE_S
            except StoreError as exc:
                logger.warning("config watcher: %s; retrying in %.1fs", exc, backoff)
                _close(pubsub)
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        _close(pubsub)

    def _subscribe(self) -> PubSub:
        with redis_errors(f"subscribe to {self._channel}"):
            pubsub: PubSub = self._r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(self._channel)
        return pubsub

    def _wait(self, pubsub: PubSub | None) -> None:
        """Until a change message arrives, ``poll_s`` passes, or stop() is called."""
        remaining = self._poll_s
        while remaining > 0 and not self._stop.is_set():
            step = min(_SLICE_S, remaining)
            if pubsub is None:
                self._stop.wait(step)
            else:
                with redis_errors(f"listen on {self._channel}"):
                    if pubsub.get_message(timeout=step) is not None:
                        return
            remaining -= step

    def _check(self) -> None:
        if self._service.version() == self._known:
            return
        try:
            snapshot = self._service.effective()
        except ConfigNotLoadedError:
            return
        if snapshot.version == self._known:
            return
        self._known = snapshot.version
        logger.info("config switched to version %d sha256 %s", snapshot.version, snapshot.sha256)
        try:
            self._on_change(snapshot)
        except Exception:
            logger.exception("config watcher: on_change failed for version %d", snapshot.version)


def _close(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except redis.RedisError:
            logger.debug("config watcher: closing pub/sub failed", exc_info=True)
