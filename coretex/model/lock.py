"""Resource locks: modes, grants, what a lock looks like, and the checks on a lock request.

A resource is any string naming the thing guarded (``repo:x``, ``cluster/ns``, ``service/env``,
``incident:42``); core gives it no meaning. Many owners may hold a resource in ``shared`` mode,
or exactly one in ``exclusive`` mode. Every grant carries a fencing token that only ever grows,
so an effect can refuse a holder whose lock expired behind its back.

Pure: no I/O. The store (``coretex.store.locks``) keeps locks in Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MAX_NAME_CHARS = 256


class LockMode(StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class LockGrant:
    """What a successful ``acquire`` or ``renew`` hands back."""

    resource: str
    owner: str
    mode: LockMode
    token: int
    """Fencing token: larger than every token granted on this resource before it."""
    expires_at: float
    """Seconds since the epoch, by the Redis server's clock, when the grant lapses unless renewed."""


@dataclass(frozen=True)
class LockHolder:
    owner: str
    token: int
    expires_at: float
    """Seconds since the epoch, by the Redis server's clock."""


@dataclass(frozen=True)
class LockInfo:
    """A held lock as seen at one instant: its mode, live holders (earliest expiry first), queue length."""

    resource: str
    mode: LockMode
    holders: tuple[LockHolder, ...]
    waiting: int

    def holder(self, owner: str) -> LockHolder | None:
        return next((h for h in self.holders if h.owner == owner), None)


def check_name(field: str, value: object) -> str:
    """A resource or owner: 1..256 printable characters, no whitespace. Raise ValueError naming ``field``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{field} must be at most {MAX_NAME_CHARS} characters, got {len(value)}")
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise ValueError(f"{field} must be printable with no whitespace or control characters, got {value!r}")
    return value


def check_mode(value: object) -> LockMode:
    if isinstance(value, str) and value in {m.value for m in LockMode}:
        return LockMode(value)
    raise ValueError(f"mode must be one of {[m.value for m in LockMode]}, got {value!r}")


def check_ttl_ms(value: object, max_ttl_ms: int) -> int:
    """A TTL in whole milliseconds, ``0 < ttl_ms <= max_ttl_ms``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ttl_ms must be an integer number of milliseconds, got {value!r}")
    if not 0 < value <= max_ttl_ms:
        raise ValueError(f"ttl_ms must be in 1..{max_ttl_ms}, got {value}")
    return value


def check_wait_s(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"wait_s must be a finite number of seconds >= 0, got {value!r}")
    return float(value)
