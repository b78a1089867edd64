"""Liveness probes of the backing services, for ``/health`` and ``/api/v1/status``.

The two raw Redis reads below belong in a store module (a heartbeat store next to
``coretex.scheduler.tasks.tick``, which writes ``<ns>:beat:last_tick``); they are kept in this
one place so the routes themselves never touch Redis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coretex.errors import StoreError
from coretex.services import Services
from coretex.store import redis_errors

BEAT_MAX_AGE_S = 10.0


@dataclass(frozen=True)
class RedisProbe:
    ok: bool
    detail: str


@dataclass(frozen=True)
class BeatProbe:
    ok: bool
    last_tick_age_s: float | None


def ping_redis(services: Services) -> None:
    """Return if Redis answers PING; raise :class:`StoreError` otherwise."""
    with redis_errors("ping redis"):
        services.redis.ping()


def probe_redis(services: Services) -> RedisProbe:
    try:
        ping_redis(services)
    except StoreError as exc:
        return RedisProbe(False, _short(exc))
    return RedisProbe(True, "PONG")


def probe_beat(services: Services) -> BeatProbe:
    """Age of beat's last tick; ok while younger than :data:`BEAT_MAX_AGE_S`."""
    try:
        with redis_errors("read beat tick"):
            raw = services.redis.get(f"{services.settings.namespace}:beat:last_tick")
    except StoreError:
        return BeatProbe(False, None)
    if raw is None:
        return BeatProbe(False, None)
    try:
        age = max(0.0, time.time() - float(raw))
    except ValueError:
        return BeatProbe(False, None)
    return BeatProbe(age < BEAT_MAX_AGE_S, round(age, 3))


def _short(exc: StoreError) -> str:
    # Enough to tell "refused" from "timed out", without dumping a traceback into a status page.
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else "unavailable"
