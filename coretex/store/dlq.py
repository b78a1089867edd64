"""The dead-letter queue: jobs that could not finish, with why and where they stopped.

Keys:
    <ns>:dlq:entry:<job_id>   hash  a DLQEntry (error_code, error_message, last_state, attempts, ...)
    <ns>:dlq                  zset  job ids scored by the time they were dead-lettered

Entry and index are written in one MULTI/EXEC so a listed id always has its entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, cast

import redis

from coretex.errors import NotFoundError
from coretex.model.dlq import DLQEntry
from coretex.settings import Settings
from coretex.store._redis import redis_errors


class DLQStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._index = f"{settings.namespace}:dlq"
        self._prefix = f"{settings.namespace}:dlq:entry:"

    def add(self, entry: DLQEntry) -> None:
        record: Mapping[Any, Any] = {
            k: repr(v) if isinstance(v, float) else str(v) for k, v in asdict(entry).items()
        }
        with redis_errors(f"dead-letter job {entry.job_id}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._prefix + entry.job_id, mapping=record)
            pipe.zadd(self._index, {entry.job_id: entry.created_at})
            pipe.execute()

    def get(self, job_id: str) -> DLQEntry:
        with redis_errors(f"read DLQ entry {job_id}"):
            raw = cast(dict[str, str], self._r.hgetall(self._prefix + job_id))
        if not raw:
            raise NotFoundError(f"no DLQ entry for job {job_id}")
        return _decode(raw)

    def delete(self, job_id: str) -> bool:
        """Remove an entry (after it was handled); False when there was none."""
        with redis_errors(f"delete DLQ entry {job_id}"):
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._prefix + job_id)
            pipe.zrem(self._index, job_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def list(self, *, tenant_id: str | None = None, limit: int = 50) -> list[DLQEntry]:
        """Newest first, optionally only one tenant's entries."""
        with redis_errors("list DLQ"):
            ids = cast(list[str], self._r.zrevrange(self._index, 0, -1 if tenant_id else limit - 1))
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._prefix + job_id)
            rows = cast(list[dict[str, str]], pipe.execute())
        entries = [_decode(raw) for raw in rows if raw]
        if tenant_id is not None:
            entries = [e for e in entries if e.tenant_id == tenant_id]
        return entries[:limit]


def _decode(raw: dict[str, str]) -> DLQEntry:
    return DLQEntry(
        job_id=raw["job_id"],
        topic=raw["topic"],
        tenant_id=raw["tenant_id"],
        error_code=raw["error_code"],
        error_message=raw["error_message"],
        last_state=raw["last_state"],
        attempts=int(raw["attempts"]),
        created_at=float(raw["created_at"]),
    )
