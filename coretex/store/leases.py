"""Job leases: a running job is held by its worker, which extends the lease by heartbeat.

Keys:
    <ns>:leases   zset  "<job_id>:<attempt>" -> lease expiry (seconds since epoch)

A worker killed mid-job stops extending; the beat tick pops the expired lease (exactly once,
``lua/zset_pop_due.lua``) and the scheduler retries or dead-letters the job as ``worker_lost``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from coretex.settings import Settings
from coretex.store._redis import Pipeline, load_script, redis_errors


@dataclass(frozen=True)
class Lease:
    job_id: str
    attempt: int
    expires_at: float


class LeaseStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._key = f"{settings.namespace}:leases"
        self._pop = load_script(client, "zset_pop_due")

    def hold(self, job_id: str, attempt: int, expires_at: float, *, client: Pipeline | None = None) -> None:
        """Take or extend the lease of ``job_id``'s ``attempt`` until ``expires_at``."""
        with redis_errors(f"lease job {job_id}"):
            (client or self._r).zadd(self._key, {f"{job_id}:{attempt}": expires_at})

    def release(self, job_id: str, attempt: int, *, client: Pipeline | None = None) -> None:
        with redis_errors(f"release lease of job {job_id}"):
            (client or self._r).zrem(self._key, f"{job_id}:{attempt}")

    def held(self, job_id: str, attempt: int) -> bool:
        with redis_errors(f"read lease of job {job_id}"):
            return self._r.zscore(self._key, f"{job_id}:{attempt}") is not None

    def pop_expired(self, now: float, limit: int = 500) -> list[Lease]:
        with redis_errors("pop expired leases"):
            flat = cast(list[str], self._pop(keys=[self._key], args=[repr(now), limit]))
        leases = []
        for member, score in zip(flat[::2], flat[1::2], strict=True):
            job_id, attempt = member.rsplit(":", 1)
            leases.append(Lease(job_id, int(attempt), float(score)))
        return leases
