"""What each kernel reports about its policy, for the gateway's status page.

Keys (namespace ``<ns>``)::

    <ns>:kernel:status:<kernel_id>   hash   one kernel's status (fields of :class:`KernelStatus`,
                                            ``sources`` as JSON); TTL STATUS_TTL_S, refreshed by
                                            the kernel's reload thread every poll
    <ns>:kernel:statuses             zset   kernel_id -> updated_at; members older than the TTL
                                            are pruned by every write

A kernel that stops refreshing (crashed, partitioned) disappears after the TTL instead of
showing a stale READY. Both keys are written in one MULTI/EXEC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, cast

import redis

from coretex.settings import Settings
from coretex.store._redis import redis_errors

STATUS_TTL_S = 15


class Readiness(StrEnum):
    READY = "READY"
    """Serving a snapshot verified against the current sources."""
    DEGRADED = "DEGRADED"
    """Serving a valid snapshot, but the latest reload failed (or it is the last-known-good)."""
    NOT_READY = "NOT_READY"
    """No usable snapshot (none loaded, or older than the max age): every decision is DENY."""


@dataclass(frozen=True)
class KernelStatus:
    kernel_id: str
    addr: str
    status: Readiness
    stage: str = ""
    """Failing stage: fetch | verify | parse | compile | test | max_age; empty when READY."""
    message: str = ""
    version: int = 0
    sha256: str = ""
    snapshot_id: str = ""
    """``v<version>:<sha256 prefix>``, as ListSnapshots answers."""
    policy_snapshot: str = ""
    """The content id decisions carry (``PolicyCheckResponse.policy_snapshot``)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Source name -> sha256 of its signed bytes."""
    loaded_at: float = 0.0
    verified_at: float = 0.0
    """Last time the active snapshot was confirmed against its sources (max age counts from here)."""
    updated_at: float = 0.0
    dev_mode: bool = False

    def to_fields(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        data["sources"] = json.dumps(self.sources, sort_keys=True)
        data["dev_mode"] = "1" if self.dev_mode else "0"
        return {key: value if isinstance(value, str) else repr(value) for key, value in data.items()}

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> KernelStatus:
        return cls(
            kernel_id=raw["kernel_id"],
            addr=raw.get("addr", ""),
            status=Readiness(raw["status"]),
            stage=raw.get("stage", ""),
            message=raw.get("message", ""),
            version=int(raw.get("version") or 0),
            sha256=raw.get("sha256", ""),
            snapshot_id=raw.get("snapshot_id", ""),
            policy_snapshot=raw.get("policy_snapshot", ""),
            sources=json.loads(raw.get("sources") or "{}"),
            loaded_at=float(raw.get("loaded_at") or 0),
            verified_at=float(raw.get("verified_at") or 0),
            updated_at=float(raw.get("updated_at") or 0),
            dev_mode=raw.get("dev_mode") == "1",
        )


def _status_key(namespace: str, kernel_id: str) -> str:
    return f"{namespace}:kernel:status:{kernel_id}"


def _index_key(namespace: str) -> str:
    return f"{namespace}:kernel:statuses"


def write_kernel_status(client: redis.Redis, namespace: str, status: KernelStatus) -> None:
    """Store ``status`` with its TTL and index it; raises StoreError."""
    key = _status_key(namespace, status.kernel_id)
    fields: Mapping[Any, Any] = status.to_fields()  # redis-py's mapping type is invariant
    with redis_errors(f"write kernel status {status.kernel_id}"):
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, STATUS_TTL_S)
        pipe.zadd(_index_key(namespace), {status.kernel_id: status.updated_at})
        pipe.zremrangebyscore(_index_key(namespace), "-inf", status.updated_at - STATUS_TTL_S)
        pipe.execute()


def read_kernel_statuses(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The live kernels' statuses (fields of :class:`KernelStatus`), sorted by kernel id; raises StoreError."""
    index = _index_key(settings.namespace)
    with redis_errors("read kernel statuses"):
        ids = cast(list[str], client.zrangebyscore(index, time.time() - STATUS_TTL_S, "+inf"))
        pipe = client.pipeline(transaction=False)
        for kernel_id in ids:
            pipe.hgetall(_status_key(settings.namespace, kernel_id))
        rows = cast(list[dict[str, str]], pipe.execute())
    statuses = [KernelStatus.from_fields(row) for row in rows if row]
    return [{**asdict(status), "status": status.status.value} for status in sorted(statuses, key=lambda s: s.kernel_id)]


def clear_kernel_status(client: redis.Redis, namespace: str, kernel_id: str) -> None:
    """Remove a stopping kernel's status at once (instead of after the TTL); raises StoreError."""
    with redis_errors(f"clear kernel status {kernel_id}"):
        pipe = client.pipeline(transaction=True)
        pipe.delete(_status_key(namespace, kernel_id))
        pipe.zrem(_index_key(namespace), kernel_id)
        pipe.execute()
