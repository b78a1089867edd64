"""Shared / exclusive resource locks with TTLs, fencing tokens and a fair wait queue.

Keys (``<resource>`` last, so a resource containing ``:`` can never collide with another's keys):
    <ns>:lock:holders:<resource>  zset    owner -> expires_at (ms, Redis server clock)
    <ns>:lock:state:<resource>    hash    ``mode`` -> shared|exclusive; ``t:<owner>`` -> fencing token
    <ns>:lock:queue:<resource>    zset    waiting owner -> ticket (FIFO)
    <ns>:lock:waiters:<resource>  hash    waiting owner -> ``<mode>|<stale_at ms>``
    <ns>:lock:fence               string  fencing-token counter, one per namespace, never expires

Every change runs in one Lua script (``lua/lock_*.lua``) that first drops expired holders, so a lock
whose owner died frees itself at its TTL with no sweeper; holders/state keys carry a PEXPIREAT at the
latest holder expiry and queue/waiters keys at the latest waiter lease, so nothing outlives its use.
Times come from the Redis server clock (``TIME``), never from clients, so client clock skew cannot
stretch or shorten a lock. TTLs are whole **milliseconds**.

Fencing tokens come from one counter per namespace rather than one per resource. That keeps them
strictly increasing on every resource (what fencing needs) while the counter never has to expire:
a per-resource counter would either leave one key forever behind every resource ever locked
(``incident:<id>`` is unbounded) or expire, and a reset counter hands out old token numbers again,
so an effect could accept a stale holder. Holders are compared by token only within one resource.

Waiting (``wait_s > 0``) joins a FIFO queue and polls with short jittered backoff (shorter near the
head). Only the queue head -- or every shared request with only shared waiters ahead -- may take
the lock, so 50 contenders all get it in arrival order and readers cannot starve a writer. A waiter
re-announces itself on every poll; one that stops polling (its process died) goes stale after
``waiter_lease_ms`` and is dropped by the next script that walks past it.

Choices: the same owner acquiring again in the same mode renews (same token, new expiry). A mode
change is granted only to the sole holder (upgrade shared -> exclusive, or downgrade) and issues a
new token: effects fenced on the old grant's token must see it changed. An owner holding shared
that asks for exclusive while others hold shared waits (with ``wait_s``) for them to leave; two
such owners both waiting to upgrade cannot both win and time out -- upgrade only when you must.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis

from coretex.errors import ConfigError, StoreError
from coretex.model.lock import (
    LockGrant,
    LockHolder,
    LockInfo,
    LockMode,
    check_mode,
    check_name,
    check_ttl_ms,
    check_wait_s,
)
from coretex.settings import Settings
from coretex.store._redis import load_script, redis_errors

T = TypeVar("T")


class LockRequestError(StoreError, ValueError):
    """A lock call with a bad argument; ``field`` names it."""

    code = "invalid_lock_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class LockNotHeldError(StoreError):
    """Release or renew by an owner that does not hold the lock (never held it, or it expired)."""

    code = "lock_not_held"


class LockTimeoutError(StoreError):
    """The lock could not be had within ``wait_s`` (at once, for ``wait_s=0``)."""

    code = "lock_timeout"


class LockQueueFullError(StoreError):
    """``max_waiters`` owners already wait for this resource; try again later."""

    code = "lock_queue_full"


@dataclass(frozen=True)
class LockConfig:
    default_ttl_ms: int = 30_000
    """TTL of a grant when the caller names none: ``CORETEX_LOCK_DEFAULT_TTL_MS``."""
    max_ttl_ms: int = 24 * 3600 * 1000
    """Longest TTL a caller may ask for (locks are always bounded): ``CORETEX_LOCK_MAX_TTL_MS``."""
    max_waiters: int = 1000
    """Most owners queued on one resource; more are refused: ``CORETEX_LOCK_MAX_WAITERS``."""
    waiter_lease_ms: int = 5_000
    """A waiter that does not poll within this is dropped from the queue (its process died).
    Must stay well above ``poll_max_s``: ``CORETEX_LOCK_WAITER_LEASE_MS``."""
    poll_min_s: float = 0.002
    """Pause between polls of the queue head; the n-th waiter pauses about n times this."""
    poll_max_s: float = 0.05
    """Longest pause between two polls of a waiter."""

    def __post_init__(self) -> None:
        if min(self.default_ttl_ms, self.max_ttl_ms, self.max_waiters, self.waiter_lease_ms) <= 0:
            raise ConfigError(f"lock config values must be positive: {self}")
        if self.default_ttl_ms > self.max_ttl_ms:
            raise ConfigError(f"default_ttl_ms {self.default_ttl_ms} exceeds max_ttl_ms {self.max_ttl_ms}")
        if not 0 < self.poll_min_s <= self.poll_max_s or self.poll_max_s * 1000 * 10 > self.waiter_lease_ms:
            raise ConfigError(f"need 0 < poll_min_s <= poll_max_s and waiter_lease_ms >= 10 * poll_max_s: {self}")


@dataclass(frozen=True)
class _Request:
    resource: str
    owner: str
    mode: LockMode
    ttl_ms: int


class LockStore:
    """Acquire, renew, release and inspect locks. Thread-safe: share one per process."""

    def __init__(self, client: redis.Redis, settings: Settings, config: LockConfig | None = None) -> None:
        self._r = client
        self._ns = settings.namespace
        self._config = config or LockConfig()
        self._fence_key = f"{self._ns}:lock:fence"
        self._acquire = load_script(client, "lock_acquire")
        self._release = load_script(client, "lock_release")
        self._renew = load_script(client, "lock_renew")
        self._inspect = load_script(client, "lock_inspect")

    def _keys(self, resource: str) -> list[str]:
        return [f"{self._ns}:lock:{part}:{resource}" for part in ("holders", "state", "queue", "waiters")]

    def acquire(
        self,
        resource: str,
        owner: str,
        *,
        mode: LockMode | str = LockMode.EXCLUSIVE,
        ttl_ms: int | None = None,
        wait_s: float = 0,
    ) -> LockGrant:
        """Take ``resource`` for ``owner`` in ``mode`` for ``ttl_ms``, waiting up to ``wait_s`` seconds.

        Raise :class:`LockTimeoutError` when not granted in time (the owner leaves the queue),
        :class:`LockQueueFullError` when too many wait already, :class:`LockRequestError` on bad input.
        """
        request = self._request(resource, owner, mode, ttl_ms)
        wait = _field("wait_s", check_wait_s, wait_s)
        deadline = time.monotonic() + wait
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000) if wait > 0 else 0
            reply = self._try(request, max(left_ms, 0))
            if reply[0] == "granted":
                return LockGrant(request.resource, request.owner, request.mode, int(reply[1]), int(reply[2]) / 1000)
            if reply[0] == "full":
                raise LockQueueFullError(f"lock {resource!r}: {reply[1]} owners already wait")
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                if wait > 0:
                    self._leave_queue(request)
                raise LockTimeoutError(f"lock {resource!r} not granted to {owner!r} within {wait}s: {_why(reply)}")
            ahead = int(reply[1]) if reply[0] == "queued" else 0
            time.sleep(min(self._pause(ahead), left_s))

    def renew(self, resource: str, owner: str, *, ttl_ms: int | None = None) -> LockGrant:
        """Extend ``owner``'s hold to now + ``ttl_ms``; same mode and token.

        Raise :class:`LockNotHeldError` when ``owner`` does not hold it (or its TTL already passed).
        """
        resource, owner = _target(resource, owner)
        ttl = self._ttl(ttl_ms)
        with redis_errors(f"renew lock {resource}"):
            reply = cast(list[Any], self._renew(keys=self._keys(resource)[:2], args=[owner, ttl]))
        if reply[0] != "renewed":
            raise LockNotHeldError(f"lock {resource!r} is not held by {owner!r}; nothing renewed")
        return LockGrant(resource, owner, LockMode(reply[3]), int(reply[1]), int(reply[2]) / 1000)

    def release(self, resource: str, owner: str) -> None:
        """Give up ``owner``'s hold. Raise :class:`LockNotHeldError` when it holds none."""
        resource, owner = _target(resource, owner)
        with redis_errors(f"release lock {resource}"):
            reply = cast(list[Any], self._release(keys=self._keys(resource)[:2], args=[owner]))
        if reply[0] != "released":
            raise LockNotHeldError(f"lock {resource!r} is not held by {owner!r}; nothing released")

    def get(self, resource: str) -> LockInfo | None:
        """The lock's mode, holders and queue length now, or None when nobody holds it."""
        resource = _field("resource", check_name, "resource", resource)
        with redis_errors(f"read lock {resource}"):
            reply = cast(list[Any], self._inspect(keys=self._keys(resource), args=[]))
        if not reply[0]:
            return None
        rest = reply[2:]
        holders = tuple(
            LockHolder(str(rest[i]), int(rest[i + 2]), int(rest[i + 1]) / 1000) for i in range(0, len(rest), 3)
        )
        return LockInfo(resource, LockMode(reply[0]), holders, int(reply[1]))

    def check_fence(self, resource: str, token: int) -> bool:
        """True only while the grant that received ``token`` still holds ``resource``."""
        if isinstance(token, bool) or not isinstance(token, int):
            raise LockRequestError("token", f"token must be an integer, got {token!r}")
        info = self.get(resource)
        return info is not None and any(h.token == token for h in info.holders)

    def _request(self, resource: str, owner: str, mode: LockMode | str, ttl_ms: int | None) -> _Request:
        resource, owner = _target(resource, owner)
        return _Request(resource, owner, _field("mode", check_mode, mode), self._ttl(ttl_ms))

    def _ttl(self, ttl_ms: int | None) -> int:
        value = self._config.default_ttl_ms if ttl_ms is None else ttl_ms
        return _field("ttl_ms", check_ttl_ms, value, self._config.max_ttl_ms)

    def _try(self, request: _Request, wait_ms: int) -> list[Any]:
        keys = [*self._keys(request.resource), self._fence_key]
        args = [request.owner, request.mode.value, request.ttl_ms, wait_ms,
                self._config.waiter_lease_ms, self._config.max_waiters]
        with redis_errors(f"acquire lock {request.resource}"):
            return cast(list[Any], self._acquire(keys=keys, args=args))

    def _leave_queue(self, request: _Request) -> None:
        _, _, queue, waiters = self._keys(request.resource)
        with redis_errors(f"leave queue of lock {request.resource}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(queue, request.owner)
            pipe.hdel(waiters, request.owner)
            pipe.execute()

    def _pause(self, ahead: int) -> float:
        """Jittered, so waiters do not poll in lockstep; short at the head, where a hand-off is next."""
        base = min(self._config.poll_max_s, self._config.poll_min_s * (1 + ahead))
        return random.uniform(base / 2, base)


def _field(name: str, check: Callable[..., T], *args: object) -> T:
    """Run a model check; turn its ValueError into a :class:`LockRequestError` naming the field."""
    try:
        return check(*args)
    except ValueError as exc:
        raise LockRequestError(name, str(exc)) from None


def _target(resource: str, owner: str) -> tuple[str, str]:
    return _field("resource", check_name, "resource", resource), _field("owner", check_name, "owner", owner)


def _why(reply: list[Any]) -> str:
    if reply[0] == "queued":
        return f"{reply[1]} waiter(s) ahead, held {reply[2] or 'by nobody'}"
    holders, queued = int(reply[2]), int(reply[3])
    held = f"held {reply[1]} by {holders} owner(s)" if holders else "not held"
    return f"{held}, {queued} waiter(s) queued"
