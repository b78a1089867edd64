"""The dead-letter queue: jobs that could not finish, with why and where they stopped.

Keys:
    <ns>:dlq:entry:<job_id>   hash  a DLQEntry (error_code, error_message, last_state, attempts, ...)
    <ns>:dlq                  zset  job ids scored by the time they were dead-lettered

    <ns>:dlq:malformed        stream  messages that are not usable CAP packets: queue, reason, size,
                                      sha256 and (up to 64 KiB) the bytes in base64; MAXLEN ~1000

Entry and index are written in one MULTI/EXEC so a listed id always has its entry.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, cast

import redis

from coretex.errors import NotFoundError
from coretex.model.dlq import DLQEntry
from coretex.settings import Settings
from coretex.store._redis import redis_errors

MALFORMED_MAXLEN = 1000
MALFORMED_KEEP_BYTES = 64 * 1024


class DLQStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._index = f"{settings.namespace}:dlq"
        self._prefix = f"{settings.namespace}:dlq:entry:"
        self._malformed = f"{settings.namespace}:dlq:malformed"

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

    def quarantine(self, queue: str, reason: str, data: bytes) -> None:
        """Keep an undecodable message for inspection instead of looping or crashing on it."""
        kept = base64.b64encode(data).decode() if len(data) <= MALFORMED_KEEP_BYTES else ""
        fields = {"queue": queue, "reason": reason, "size": str(len(data)),
                  "sha256": hashlib.sha256(data).hexdigest(), "body_b64": kept, "at": repr(time.time())}
        with redis_errors("quarantine a malformed message"):
            self._r.xadd(self._malformed, fields, maxlen=MALFORMED_MAXLEN, approximate=True)  # type: ignore[arg-type]

    def malformed(self, limit: int = 50) -> list[dict[str, str]]:
        with redis_errors("read malformed messages"):
            entries = cast(list[tuple[str, dict[str, str]]], self._r.xrevrange(self._malformed, count=limit))
        return [fields for _, fields in entries]

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
